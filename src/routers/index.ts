/**
 * The root router: the contract. `AppRouter` is the type the graphcap UI's tRPC client imports;
 * the REST endpoints and the OpenAPI document are generated from the same procedures.
 */
import { createCallerFactory, router } from '../trpc.js';
import { accessQuery } from './access.js';
import { batchRouter } from './batch.js';
import { captionsRouter } from './captions.js';
import { datasetsRouter } from './datasets.js';
import { eventsRouter } from './events.js';
import { imagesRouter } from './images.js';
import { perspectivesRouter } from './perspectives.js';
import { providersRouter } from './providers.js';
import { workspaceRouter } from './workspace.js';

export const appRouter = router({
  // batch first: its literal /api/perspectives/batch/* paths are matched before the data routes.
  batch: batchRouter,
  workspace: workspaceRouter,
  images: imagesRouter,
  datasets: datasetsRouter,
  perspectives: perspectivesRouter,
  captions: captionsRouter,
  providers: providersRouter,
  events: eventsRouter,
  access: accessQuery,
});

export type AppRouter = typeof appRouter;
export const createCaller = createCallerFactory(appRouter);
