// Typed reads of OpenAI request fields; a wrong type is a 400 naming the field (never an echo of the input).
import { badRequest } from "./errors.ts";

export type Body = Record<string, unknown>;

export function asBody(x: unknown): Body {
  if (x === null || typeof x !== "object" || Array.isArray(x)) throw badRequest("the request body must be a JSON object");
  return x as Body;
}

export function num(b: Body, key: string): number | undefined {
  const v = b[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v)) throw badRequest(`'${key}' must be a number`, key);
  return v;
}

export function int(b: Body, key: string): number | undefined {
  const v = num(b, key);
  if (v !== undefined && !Number.isInteger(v)) throw badRequest(`'${key}' must be an integer`, key);
  return v;
}

export function bool(b: Body, key: string): boolean | undefined {
  const v = b[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw badRequest(`'${key}' must be a boolean`, key);
  return v;
}

export function str(b: Body, key: string): string | undefined {
  const v = b[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw badRequest(`'${key}' must be a string`, key);
  return v;
}

export function obj(b: Body, key: string): Body | undefined {
  const v = b[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "object" || Array.isArray(v)) throw badRequest(`'${key}' must be an object`, key);
  return v as Body;
}

export function intList(b: Body, key: string): number[] | undefined {
  const v = b[key];
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || !v.every((x) => Number.isInteger(x))) throw badRequest(`'${key}' must be a list of integers`, key);
  return v as number[];
}
