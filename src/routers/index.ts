/**
 * The root router: the contract. `AppRouter` is the type the graphcap UI's tRPC client imports;
 * the REST endpoints and the OpenAPI document are generated from the same procedures.
 */
import { createCallerFactory, router } from '../trpc.js';
import { batchRouter } from './batch.js';
import { workspaceRouter } from './workspace.js';

export const appRouter = router({
  batch: batchRouter,
  workspace: workspaceRouter,
});

export type AppRouter = typeof appRouter;
export const createCaller = createCallerFactory(appRouter);
