/** Content hashes (SHA-256, hex) of bytes and files: data checksums, calibration tokens, store keys. */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';

export function sha256Bytes(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

export function sha256File(p: string): string {
  return sha256Bytes(readFileSync(p));
}
