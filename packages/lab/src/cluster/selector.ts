// Label and field selectors in the Kubernetes API's syntax (k8s.io/apimachinery labels.Parse and
// fields.ParseSelector): `a=b,c!=d,e,!f,g in (x,y),h notin (z),i>3`. A malformed selector throws the
// API's 400 BadRequest, so the store and the HTTP server reject exactly what kube-apiserver rejects.

import { badRequest } from './apiserver-status.js';

export type LabelOperator = '=' | '!=' | 'in' | 'notin' | 'exists' | '!' | 'gt' | 'lt';

export interface LabelRequirement {
  readonly key: string;
  readonly operator: LabelOperator;
  readonly values: readonly string[];
}

export interface LabelSelector {
  readonly requirements: readonly LabelRequirement[];
  /** True when the selector has no requirement (selects everything). */
  readonly empty: boolean;
  matches(labels: Readonly<Record<string, string>> | undefined): boolean;
}

const NAME_RE = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;
const DNS_SUBDOMAIN_RE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const INTEGER_RE = /^-?[0-9]+$/;

function validateKey(key: string): void {
  const slash = key.indexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  if (
    prefix !== undefined &&
    (prefix.length === 0 || prefix.length > 253 || !DNS_SUBDOMAIN_RE.test(prefix))
  ) {
    throw badRequest(
      `unable to parse requirement: key: Invalid value: "${key}": prefix part must be a DNS subdomain`,
    );
  }
  if (name.length === 0 || name.length > 63 || !NAME_RE.test(name)) {
    throw badRequest(
      `unable to parse requirement: key: Invalid value: "${key}": name part must consist of alphanumeric ` +
        `characters, '-', '_' or '.', and must start and end with an alphanumeric character`,
    );
  }
}

function validateValue(value: string): void {
  if (value === '') return;
  if (value.length > 63 || !NAME_RE.test(value)) {
    throw badRequest(
      `unable to parse requirement: values[0]: Invalid value: "${value}": a valid label must be an empty ` +
        `string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an ` +
        `alphanumeric character`,
    );
  }
}

type Token =
  | { kind: 'id'; text: string }
  | { kind: 'op'; text: '=' | '==' | '!=' | '!' | '(' | ')' | ',' | '>' | '<' }
  | { kind: 'end' };

const SPECIAL = new Set(['=', '!', '(', ')', ',', '>', '<']);

function tokenize(input: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < input.length) {
    const c = input[i] ?? '';
    if (c === ' ' || c === '\t' || c === '\n' || c === '\r') {
      i++;
      continue;
    }
    if (SPECIAL.has(c)) {
      const two = input.slice(i, i + 2);
      if (two === '==' || two === '!=') {
        out.push({ kind: 'op', text: two });
        i += 2;
      } else {
        out.push({ kind: 'op', text: c as '=' | '!' | '(' | ')' | ',' | '>' | '<' });
        i++;
      }
      continue;
    }
    let j = i;
    while (j < input.length) {
      const d = input[j] ?? '';
      if (SPECIAL.has(d) || d === ' ' || d === '\t' || d === '\n' || d === '\r') break;
      j++;
    }
    out.push({ kind: 'id', text: input.slice(i, j) });
    i = j;
  }
  out.push({ kind: 'end' });
  return out;
}

function describe(t: Token): string {
  return t.kind === 'end' ? 'EOF' : `'${t.text}'`;
}

class Parser {
  private pos = 0;
  constructor(private readonly tokens: Token[]) {}

  private peek(): Token {
    return this.tokens[this.pos] ?? { kind: 'end' };
  }
  private next(): Token {
    const t = this.peek();
    this.pos++;
    return t;
  }

  parse(): LabelRequirement[] {
    const reqs: LabelRequirement[] = [];
    if (this.peek().kind === 'end') return reqs;
    for (;;) {
      reqs.push(this.requirement());
      const t = this.next();
      if (t.kind === 'end') return reqs;
      if (t.kind === 'op' && t.text === ',') {
        if (this.peek().kind === 'end') {
          throw badRequest(`found '${''}', expected: identifier after ','`);
        }
        continue;
      }
      throw badRequest(`found ${describe(t)}, expected: ',' or 'end of string'`);
    }
  }

  private requirement(): LabelRequirement {
    let t = this.next();
    if (t.kind === 'op' && t.text === '!') {
      t = this.next();
      if (t.kind !== 'id')
        throw badRequest(`unable to parse requirement: found ${describe(t)}, expected: identifier`);
      validateKey(t.text);
      return { key: t.text, operator: '!', values: [] };
    }
    if (t.kind !== 'id')
      throw badRequest(`unable to parse requirement: found ${describe(t)}, expected: identifier`);
    const key = t.text;
    validateKey(key);
    const op = this.peek();
    if (op.kind === 'end' || (op.kind === 'op' && op.text === ','))
      return { key, operator: 'exists', values: [] };
    this.next();
    if (op.kind === 'id' && (op.text === 'in' || op.text === 'notin')) {
      const values = this.valueSet();
      if (values.length === 0) {
        throw badRequest(
          `unable to parse requirement: for 'in', 'notin' operators, values set can't be empty`,
        );
      }
      return { key, operator: op.text, values };
    }
    if (op.kind === 'op' && (op.text === '=' || op.text === '==' || op.text === '!=')) {
      const v = this.peek();
      let value = '';
      if (v.kind === 'id') {
        value = v.text;
        this.next();
      } else if (!(v.kind === 'end' || (v.kind === 'op' && v.text === ','))) {
        throw badRequest(`unable to parse requirement: found ${describe(v)}, expected: identifier`);
      }
      validateValue(value);
      return { key, operator: op.text === '!=' ? '!=' : '=', values: [value] };
    }
    if (op.kind === 'op' && (op.text === '>' || op.text === '<')) {
      const v = this.next();
      if (v.kind !== 'id' || !INTEGER_RE.test(v.text)) {
        throw badRequest(
          `unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer (got ${describe(v)})`,
        );
      }
      return { key, operator: op.text === '>' ? 'gt' : 'lt', values: [v.text] };
    }
    throw badRequest(
      `unable to parse requirement: found ${describe(op)}, expected: in, notin, =, ==, !=, gt, lt`,
    );
  }

  private valueSet(): string[] {
    const open = this.next();
    if (!(open.kind === 'op' && open.text === '(')) {
      throw badRequest(`unable to parse requirement: found ${describe(open)}, expected: '('`);
    }
    const values: string[] = [];
    if (this.peek().kind === 'op' && (this.peek() as { text: string }).text === ')') {
      this.next();
      return values;
    }
    for (;;) {
      const v = this.peek();
      if (v.kind === 'id') {
        this.next();
        validateValue(v.text);
        values.push(v.text);
      } else if (v.kind === 'op' && (v.text === ',' || v.text === ')')) {
        values.push(''); // `(a,)` names the empty value, as in labels.Parse
      } else {
        throw badRequest(`unable to parse requirement: found ${describe(v)}, expected: identifier`);
      }
      const sep = this.next();
      if (sep.kind === 'op' && sep.text === ')') return [...new Set(values)].sort();
      if (!(sep.kind === 'op' && sep.text === ',')) {
        throw badRequest(`unable to parse requirement: found ${describe(sep)}, expected: ',' or ')'`);
      }
    }
  }
}

function matchRequirement(
  r: LabelRequirement,
  labels: Readonly<Record<string, string>> | undefined,
): boolean {
  const has = labels !== undefined && Object.prototype.hasOwnProperty.call(labels, r.key);
  const value = has ? labels[r.key] : undefined;
  switch (r.operator) {
    case 'exists':
      return has;
    case '!':
      return !has;
    case '=':
      return has && value === r.values[0];
    case '!=':
      return !has || value !== r.values[0];
    case 'in':
      return has && r.values.includes(value ?? '');
    case 'notin':
      return !has || !r.values.includes(value ?? '');
    case 'gt':
    case 'lt': {
      if (!has || value === undefined || !INTEGER_RE.test(value)) return false;
      const n = Number(value);
      const bound = Number(r.values[0]);
      return r.operator === 'gt' ? n > bound : n < bound;
    }
  }
}

/** Parses a label selector; '' or undefined selects everything. Throws 400 BadRequest when malformed. */
export function parseLabelSelector(selector: string | undefined): LabelSelector {
  const requirements = selector === undefined ? [] : new Parser(tokenize(selector)).parse();
  return {
    requirements,
    empty: requirements.length === 0,
    matches: (labels) => requirements.every((r) => matchRequirement(r, labels)),
  };
}

export interface FieldRequirement {
  readonly field: string;
  readonly operator: '=' | '!=';
  readonly value: string;
}

export interface FieldSelector {
  readonly requirements: readonly FieldRequirement[];
  readonly empty: boolean;
  /** `fields` maps a supported field path (metadata.name…) to the object's value ('' when unset). */
  matches(fields: Readonly<Record<string, string>>): boolean;
}

/**
 * Parses a field selector (`metadata.name=x,status.phase!=Running`) and checks every field against
 * `supported`, as kube-apiserver does per resource; unknown field → 400 `field label not supported: f`.
 */
export function parseFieldSelector(
  selector: string | undefined,
  supported: readonly string[],
): FieldSelector {
  const requirements: FieldRequirement[] = [];
  if (selector !== undefined && selector.trim() !== '') {
    for (const part of splitUnescaped(selector)) {
      const m = /^([^!=]*?)(==|!=|=)(.*)$/.exec(part);
      if (m === null) throw badRequest(`invalid selector: '${selector}'; can't understand '${part}'`);
      const field = (m[1] ?? '').trim();
      const op = m[2] === '!=' ? '!=' : '=';
      const value = unescapeFieldValue((m[3] ?? '').trim());
      if (!supported.includes(field)) throw badRequest(`field label not supported: ${field}`);
      requirements.push({ field, operator: op, value });
    }
  }
  return {
    requirements,
    empty: requirements.length === 0,
    matches: (fields) =>
      requirements.every((r) => ((fields[r.field] ?? '') === r.value) === (r.operator === '=')),
  };
}

// Field values may contain `\,` `\=` `\\` escapes (fields.EscapeValue).
function splitUnescaped(s: string): string[] {
  const parts: string[] = [];
  let cur = '';
  for (let i = 0; i < s.length; i++) {
    const c = s[i] ?? '';
    if (c === '\\' && i + 1 < s.length) {
      cur += c + (s[i + 1] ?? '');
      i++;
    } else if (c === ',') {
      parts.push(cur);
      cur = '';
    } else cur += c;
  }
  parts.push(cur);
  return parts;
}

function unescapeFieldValue(v: string): string {
  return v.replace(/\\([\\,=])/g, '$1');
}
