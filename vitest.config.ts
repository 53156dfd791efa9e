import { configDefaults, defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    // Every test file gets its own database (cloned from a migrated template), so files run in
    // parallel; two workers match the two cores of the CI machine.
    pool: 'forks',
    maxWorkers: 2,
    testTimeout: 30_000,
    hookTimeout: 60_000,
    reporters: ['default', ['json', { outputFile: 'test-results/vitest.json' }]],
    // Type-level tests (expectTypeOf) are checked by the TypeScript compiler, and counted with the rest.
    // (They only run there: at run time expectTypeOf does nothing.)
    typecheck: { enabled: true, include: ['test/**/*-types.test.ts'], tsconfig: 'tsconfig.json' },
    exclude: [...configDefaults.exclude, 'test/**/*-types.test.ts'],
  },
});
