/** Applies the committed migrations to DATABASE_URL (the service also does this at start-up). */
import { loadConfig } from '../src/config.js';
import { openDatabase } from '../src/db/client.js';
import { createLogger } from '../src/logger.js';

const config = loadConfig();
const database = await openDatabase(config, createLogger(config.LOG_LEVEL));
await database.close();
process.stdout.write('migrations applied\n');
