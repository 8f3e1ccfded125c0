/**
 * Errors are values with a file, a place and a message until the CLI prints them as one line.
 * `DikeError.toString()` is that line: `file: place: message`.
 */
export class DikeError extends Error {
  constructor(
    /** The file (or directory) the problem is in; empty when there is none. */
    readonly file: string,
    /** Where in the file: a key, a tensor name, a line number, a byte offset. May be empty. */
    readonly place: string,
    readonly problem: string,
  ) {
    super([file, place, problem].filter((s) => s !== '').join(': '));
    this.name = 'DikeError';
  }

  /** One line, as the CLI prints it. */
  line(): string {
    return this.message;
  }
}

export function isDikeError(e: unknown): e is DikeError {
  return e instanceof DikeError;
}
