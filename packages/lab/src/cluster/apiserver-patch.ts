// PATCH bodies as kube-apiserver accepts them: JSON merge patch (RFC 7386), used also for
// strategic-merge-patch (a faithful subset: lists are replaced, not merged by key), and JSON patch
// (RFC 6902). Pure functions on plain JSON values; errors are the API's 400/422 Status errors.

import { badRequest } from './apiserver-status.js';

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

export type PatchType = 'merge' | 'strategic' | 'json';

/** The Content-Type → patch type table of kube-apiserver; undefined for anything else (415). */
export function patchTypeOf(contentType: string | undefined): PatchType | undefined {
  const base = (contentType ?? '').split(';')[0]?.trim().toLowerCase();
  switch (base) {
    case 'application/merge-patch+json':
      return 'merge';
    case 'application/strategic-merge-patch+json':
      return 'strategic';
    case 'application/json-patch+json':
      return 'json';
    default:
      return undefined;
  }
}

function isObject(v: unknown): v is { [key: string]: JsonValue } {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** RFC 7386: objects merge recursively, null deletes, everything else replaces. */
export function mergePatch(target: unknown, patch: unknown): JsonValue {
  if (!isObject(patch)) return structuredClone(patch as JsonValue);
  const out: { [key: string]: JsonValue } = isObject(target) ? structuredClone(target) : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

function decodePointer(path: string): string[] {
  if (path === '') return [];
  if (!path.startsWith('/'))
    throw badRequest(
      `the server rejected our request due to an error in our request: invalid JSON pointer "${path}"`,
    );
  return path
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

type Container = { [key: string]: JsonValue } | JsonValue[];

function parentOf(doc: JsonValue, tokens: string[], path: string): { parent: Container; key: string } {
  let cur: JsonValue = doc;
  for (let i = 0; i < tokens.length - 1; i++) {
    const t = tokens[i] ?? '';
    if (Array.isArray(cur)) cur = cur[Number(t)] ?? null;
    else if (isObject(cur)) cur = cur[t] ?? null;
    else cur = null;
    if (cur === null)
      throw badRequest(
        `the server rejected our request due to an error in our request: missing path "${path}"`,
      );
  }
  if (!Array.isArray(cur) && !isObject(cur)) {
    throw badRequest(
      `the server rejected our request due to an error in our request: missing path "${path}"`,
    );
  }
  return { parent: cur, key: tokens[tokens.length - 1] ?? '' };
}

function getAt(doc: JsonValue, path: string): JsonValue {
  let cur: JsonValue | undefined = doc;
  for (const t of decodePointer(path)) {
    if (Array.isArray(cur)) cur = cur[Number(t)];
    else if (isObject(cur)) cur = Object.prototype.hasOwnProperty.call(cur, t) ? cur[t] : undefined;
    else cur = undefined;
    if (cur === undefined)
      throw badRequest(
        `the server rejected our request due to an error in our request: missing path "${path}"`,
      );
  }
  return cur;
}

function arrayIndex(arr: JsonValue[], key: string, forInsert: boolean, path: string): number {
  if (forInsert && key === '-') return arr.length;
  const n = Number(key);
  const max = forInsert ? arr.length : arr.length - 1;
  if (!/^(0|[1-9][0-9]*)$/.test(key) || n > max) {
    throw badRequest(
      `the server rejected our request due to an error in our request: index out of range in "${path}"`,
    );
  }
  return n;
}

function removeAt(doc: JsonValue, path: string): JsonValue {
  const tokens = decodePointer(path);
  if (tokens.length === 0)
    throw badRequest(
      'the server rejected our request due to an error in our request: cannot remove the root',
    );
  const { parent, key } = parentOf(doc, tokens, path);
  if (Array.isArray(parent)) {
    const i = arrayIndex(parent, key, false, path);
    return parent.splice(i, 1)[0] ?? null;
  }
  if (!Object.prototype.hasOwnProperty.call(parent, key)) {
    throw badRequest(
      `the server rejected our request due to an error in our request: missing path "${path}"`,
    );
  }
  const old = parent[key] ?? null;
  delete parent[key];
  return old;
}

function addAt(doc: JsonValue, path: string, value: JsonValue, replace: boolean): JsonValue {
  const tokens = decodePointer(path);
  if (tokens.length === 0) return value;
  const { parent, key } = parentOf(doc, tokens, path);
  if (Array.isArray(parent)) {
    const i = arrayIndex(parent, key, !replace, path);
    if (replace) parent[i] = value;
    else parent.splice(i, 0, value);
  } else {
    if (replace && !Object.prototype.hasOwnProperty.call(parent, key)) {
      throw badRequest(
        `the server rejected our request due to an error in our request: missing path "${path}"`,
      );
    }
    parent[key] = value;
  }
  return doc;
}

function deepEqualJson(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) && Array.isArray(b))
    return a.length === b.length && a.every((v, i) => deepEqualJson(v, b[i]));
  if (isObject(a) && isObject(b)) {
    const ka = Object.keys(a);
    const kb = Object.keys(b);
    return (
      ka.length === kb.length &&
      ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && deepEqualJson(a[k], b[k]))
    );
  }
  return false;
}

/** RFC 6902; a failed `test` is 422 in kube-apiserver, other failures 400 (here both 400 or 422). */
export function jsonPatch(target: unknown, ops: unknown): JsonValue {
  if (!Array.isArray(ops))
    throw badRequest(
      'the server rejected our request due to an error in our request: a JSON patch must be an array',
    );
  let doc = structuredClone(target as JsonValue);
  for (const raw of ops) {
    if (!isObject(raw) || typeof raw.op !== 'string' || typeof raw.path !== 'string') {
      throw badRequest(
        'the server rejected our request due to an error in our request: malformed JSON patch operation',
      );
    }
    const path = raw.path;
    const value = raw.value === undefined ? null : structuredClone(raw.value);
    switch (raw.op) {
      case 'add':
        doc = addAt(doc, path, value, false);
        break;
      case 'replace':
        doc = addAt(doc, path, value, true);
        break;
      case 'remove':
        removeAt(doc, path);
        break;
      case 'move':
      case 'copy': {
        if (typeof raw.from !== 'string')
          throw badRequest(
            `the server rejected our request due to an error in our request: "${raw.op}" needs "from"`,
          );
        const v = raw.op === 'move' ? removeAt(doc, raw.from) : structuredClone(getAt(doc, raw.from));
        doc = addAt(doc, path, v, false);
        break;
      }
      case 'test':
        if (!deepEqualJson(getAt(doc, path), value)) {
          throw badRequest(
            `the server rejected our request due to an error in our request: testing value ${path} failed`,
          );
        }
        break;
      default:
        throw badRequest(
          `the server rejected our request due to an error in our request: unexpected kind of operation "${raw.op}"`,
        );
    }
  }
  return doc;
}

export function applyPatch(type: PatchType, target: unknown, patch: unknown): JsonValue {
  return type === 'json' ? jsonPatch(target, patch) : mergePatch(target, patch);
}

export { deepEqualJson };
