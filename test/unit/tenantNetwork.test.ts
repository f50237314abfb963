import { describe, expect, it } from 'vitest';
import { isolationPolicy } from '../../src/activities/tenantNetwork.js';

const ref = { namespace: 'team', name: 'vc1', uid: 'u' };

describe("a tenant's isolation policy", () => {
  it("admits its own namespace and the node, and the operator's namespace only when asked (a control plane in pods)", () => {
    const plain = isolationPolicy(ref, '10.244.0.1');
    expect(plain.spec!.ingress).toEqual([
      { _from: [{ podSelector: {} }] },
      { _from: [{ ipBlock: { cidr: '10.244.0.1/32' } }] },
    ]);
    const pods = isolationPolicy(ref, undefined, 'kosmos-system');
    expect(pods.spec!.ingress).toEqual([
      { _from: [{ podSelector: {} }] },
      { _from: [{ namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'kosmos-system' } } }] },
    ]);
    expect(pods.spec!.policyTypes).toEqual(['Ingress']);
  });
});
