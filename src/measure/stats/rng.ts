/** The seeded generator lives below every stage (src/util/rng.ts); re-exported for existing imports. */
export { Rng } from '../../util/rng.js';
