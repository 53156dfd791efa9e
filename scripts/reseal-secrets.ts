/**
 * `npm run secrets:reseal`: seals every stored secret under SECRETS_KEY, opening it with
 * SECRETS_KEY or one of SECRETS_KEY_PREVIOUS (src/reseal.ts). Prints what it did as JSON.
 */
import { loadConfig } from '../src/config.js';
import { openDatabase } from '../src/db/client.js';
import { createLogger } from '../src/logger.js';
import { resealSecrets } from '../src/reseal.js';

const config = loadConfig();
if (!config.SECRETS_KEY) {
  process.stderr.write('secrets:reseal: set SECRETS_KEY (the new key) and SECRETS_KEY_PREVIOUS (the keys it replaces)\n');
  process.exit(2);
}
const database = await openDatabase(config, createLogger(config.LOG_LEVEL));
try {
  const report = await resealSecrets(database.db, config.SECRETS_KEY, config.SECRETS_KEY_PREVIOUS);
  process.stdout.write(`${JSON.stringify(report)}\n`);
  if (report.unopenable.length > 0) process.exitCode = 1;
} finally {
  await database.close();
}
