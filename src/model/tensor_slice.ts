// A block of rows × columns of a 1-D or 2-D checkpoint tensor as bf16, read from the mmap'd file: a row
// range is a zero-copy view for bf16 data; a column range (row-parallel weights) is gathered row by row.
// Only the block is ever converted or copied, never the whole tensor.
import { DTYPE_BYTES, SafetensorsError, toBf16, type TensorView } from "./safetensors.ts";

export interface Span {
  start: number;
  count: number;
}

export function sliceBf16(t: TensorView, rows: Span, cols: Span): Uint16Array {
  if (t.shape.length < 1 || t.shape.length > 2) {
    throw new SafetensorsError(`${t.file}: tensor ${t.name} has ${t.shape.length} dimensions; weights have 1 or 2`, t.file, t.name);
  }
  const R = t.shape[0];
  const C = t.shape.length === 2 ? t.shape[1] : 1;
  if (rows.start < 0 || rows.start + rows.count > R || cols.start < 0 || cols.start + cols.count > C) {
    throw new Error(`slice rows [${rows.start}, +${rows.count}) cols [${cols.start}, +${cols.count}) is outside ${t.name} [${t.shape}]`);
  }
  const width = DTYPE_BYTES[t.dtype];
  const view = (from: number, n: number): TensorView => ({ ...t, shape: [n], data: t.data.subarray(from * width, (from + n) * width) });
  if (cols.start === 0 && cols.count === C) return toBf16(view(rows.start * C, rows.count * C));
  const out = new Uint16Array(rows.count * cols.count);
  for (let r = 0; r < rows.count; r++) out.set(toBf16(view((rows.start + r) * C + cols.start, cols.count)), r * cols.count);
  return out;
}
