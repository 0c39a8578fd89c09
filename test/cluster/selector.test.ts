// Label and field selector parsing and matching, table-driven against labels.Parse semantics.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseFieldSelector, parseLabelSelector } from '@grpc-kube/lab/internal/cluster/selector.js';
import { KubeApiError } from 'grpc-kube/internal/errors.js';

const LABELS = { app: 'web', tier: 'front', version: '3', 'example.com/team': 'a' };

test('label selectors match as the API matches', () => {
  const table: Array<[string, Record<string, string> | undefined, boolean]> = [
    ['', LABELS, true],
    ['', undefined, true],
    ['app=web', LABELS, true],
    ['app==web', LABELS, true],
    ['app=db', LABELS, false],
    ['app!=db', LABELS, true],
    ['missing!=x', LABELS, true], // != matches an absent key
    ['app', LABELS, true],
    ['missing', LABELS, false],
    ['!missing', LABELS, true],
    ['!app', LABELS, false],
    ['app in (db, web)', LABELS, true],
    ['app in (db)', LABELS, false],
    ['app notin (db)', LABELS, true],
    ['missing notin (db)', LABELS, true], // notin matches an absent key
    ['missing in (db)', LABELS, false],
    ['app=web,tier=front', LABELS, true],
    ['app=web,tier=back', LABELS, false],
    [' app = web , tier in (front) ', LABELS, true],
    ['version>2', LABELS, true],
    ['version<2', LABELS, false],
    ['example.com/team=a', LABELS, true],
    ['app=', { app: '' }, true],
    ['app=', LABELS, false],
    ['app=web', undefined, false],
    ['!app', undefined, true],
  ];
  for (const [sel, labels, want] of table) {
    assert.equal(parseLabelSelector(sel).matches(labels), want, `${sel} on ${JSON.stringify(labels)}`);
  }
});

test('parsed requirements keep operator and sorted values', () => {
  const s = parseLabelSelector('b notin (z,y),!c,a');
  assert.deepEqual(s.requirements, [
    { key: 'b', operator: 'notin', values: ['y', 'z'] },
    { key: 'c', operator: '!', values: [] },
    { key: 'a', operator: 'exists', values: [] },
  ]);
  assert.equal(s.empty, false);
  assert.equal(parseLabelSelector('').empty, true);
});

test('malformed label selectors are 400 BadRequest', () => {
  for (const bad of [
    'app in ()',
    'app in (a',
    'app in a',
    '=web',
    'app=web,',
    'app=web extra',
    'Bad_Key!',
    'app=-x',
    'app>x',
    '!',
    'a/b/c=d',
    `app=${'x'.repeat(64)}`,
    'app=(x)',
  ]) {
    assert.throws(
      () => parseLabelSelector(bad),
      (err: unknown) => err instanceof KubeApiError && err.status === 400 && err.reason === 'BadRequest',
      bad,
    );
  }
});

test('field selectors: =, ==, != on supported fields; unknown field is 400', () => {
  const fields = ['metadata.name', 'metadata.namespace', 'status.phase'];
  const s = parseFieldSelector('metadata.name=a,status.phase!=Failed', fields);
  assert.equal(s.matches({ 'metadata.name': 'a', 'status.phase': 'Running' }), true);
  assert.equal(s.matches({ 'metadata.name': 'a', 'status.phase': 'Failed' }), false);
  assert.equal(s.matches({ 'metadata.name': 'b' }), false);
  assert.equal(parseFieldSelector('metadata.name==a', fields).matches({ 'metadata.name': 'a' }), true);
  assert.equal(parseFieldSelector('metadata.name=a\\,b', fields).matches({ 'metadata.name': 'a,b' }), true);
  assert.equal(parseFieldSelector(undefined, fields).empty, true);
  assert.throws(
    () => parseFieldSelector('spec.foo=x', fields),
    (err: unknown) =>
      err instanceof KubeApiError &&
      err.status === 400 &&
      err.message === 'field label not supported: spec.foo',
  );
  assert.throws(
    () => parseFieldSelector('metadata.name', fields),
    (err: unknown) => err instanceof KubeApiError && err.status === 400,
  );
});
