// What a 403 tells the user to do. RBAC's denial ("… cannot <verb> resource …") gets the Role to
// grant, for the verb that was refused (a request named by its HTTP method counts as its Kubernetes
// verb: POST is create); an admission plugin's refusal (recorded from the real kube-apiserver: a pod
// created before its namespace's default ServiceAccount exists) is not RBAC and must not say so.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { errorFromStatus } from 'grpc-kube/internal/kube/client.js';

const SLICES = { group: 'discovery.k8s.io', version: 'v1', resource: 'endpointslices', namespace: 'ns' };
const PODS = { group: '', version: 'v1', resource: 'pods', namespace: 'kwatch' };

test('an RBAC denial of a read names the Role to grant: get, list, watch', () => {
  const err = errorFromStatus(SLICES, 'list', 403, {
    reason: 'Forbidden',
    message:
      'endpointslices.discovery.k8s.io is forbidden: User "system:serviceaccount:ns:app" cannot list resource "endpointslices" in API group "discovery.k8s.io" in the namespace "ns"',
  });
  assert.equal(err.code, 'GK_ERR_KUBE_FORBIDDEN');
  assert.equal(err.status, 403);
  assert.match(err.message, /^RBAC forbids "list" on endpointslices\.discovery\.k8s\.io in namespace "ns"/);
  assert.match(
    err.message,
    /verbs get, list, watch on resource "endpointslices" in apiGroup "discovery\.k8s\.io"/,
  );
});

test('an RBAC denial of a write names its own verb, from the HTTP method', () => {
  const err = errorFromStatus(PODS, 'POST', 403, {
    reason: 'Forbidden',
    message:
      'pods is forbidden: User "system:serviceaccount:kwatch:x" cannot create resource "pods" in API group "" in the namespace "kwatch"',
  });
  assert.match(err.message, /^RBAC forbids "create" on pods in namespace "kwatch"/);
  assert.match(err.message, /a Role with verb create on resource "pods" in apiGroup ""/);
  assert.doesNotMatch(err.message, /get, list, watch/);
});

test('an admission refusal is not called RBAC; the server’s reason is quoted', () => {
  const err = errorFromStatus(PODS, 'POST', 403, {
    reason: 'Forbidden',
    message:
      'pods "w1" is forbidden: error looking up service account kwatch/default: serviceaccount "default" not found',
  });
  assert.equal(err.code, 'GK_ERR_KUBE_FORBIDDEN');
  assert.doesNotMatch(err.message, /RBAC forbids|RoleBinding/);
  assert.match(
    err.message,
    /refused "create" on pods in namespace "kwatch" after authorization \(an admission check, not RBAC\)/,
  );
  assert.match(err.message, /serviceaccount "default" not found/);
});
