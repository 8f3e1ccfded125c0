/** The one place compression methods are registered: a new method is one file plus one line here. */
import type { AnyMethod } from './types.js';
import { magnitude } from './methods/magnitude.js';

export const METHODS: readonly AnyMethod[] = [
  magnitude,
];

export function findMethod(name: string): AnyMethod | undefined {
  return METHODS.find((m) => m.name === name);
}
