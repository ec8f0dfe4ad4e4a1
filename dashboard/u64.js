// Ring positions are u64 values that arrive as decimal strings (proto3 JSON). JavaScript
// numbers hold only 53 bits, so every length and share is computed with BigInt; Number is
// used only for drawing, where 2^-53 of a turn is far below a pixel.

/** 2^64: the size of the key space. */
export const SPACE = 1n << 64n;
const SPACE_NUMBER = 2 ** 64;

/** Parses a u64 sent as a decimal string (or a number, or absent = 0). */
export function u64(value) {
  if (value === undefined || value === null || value === '') return 0n;
  try {
    const v = BigInt(value);
    return v < 0n ? 0n : v & (SPACE - 1n);
  } catch {
    return 0n;
  }
}

/** A u64 (BigInt) as a fraction of the ring, 0 <= f < 1. */
export function frac(token) {
  return Number(token) / SPACE_NUMBER;
}

/** Clockwise length of the arc (start, end]; start == end is the whole ring. */
export function arcLength(start, end) {
  if (start === end) return SPACE;
  return end > start ? end - start : SPACE - start + end;
}

/** A BigInt length of the key space as a fraction 0..1 (exact to double precision). */
export function spaceFraction(length) {
  return Number(length) / SPACE_NUMBER;
}

/** Index of the first token >= h in a sorted BigUint64Array, wrapping to 0. */
export function successorIndex(tokens, h) {
  let lo = 0;
  let hi = tokens.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (tokens[mid] < h) lo = mid + 1;
    else hi = mid;
  }
  return lo === tokens.length ? 0 : lo;
}

/** Index of the first value > x in a sorted Float64Array (for hit tests on angles). */
export function upperBound(sorted, x) {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (sorted[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
