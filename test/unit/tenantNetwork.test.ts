import { describe, expect, it } from 'vitest';
import { exposedAddress, exposurePolicy, isolationPolicy } from '../../src/activities/tenantNetwork.js';

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

describe('an exposed API server', () => {
  it('is reached at the given address, else a NodePort at the operator’s node address; a LoadBalancer needs one', () => {
    expect(exposedAddress({ type: 'NodePort' }, '10.244.0.1')).toBe('10.244.0.1');
    expect(exposedAddress({ type: 'NodePort', address: 'vc.example.com' }, '10.244.0.1')).toBe(
      'vc.example.com',
    );
    expect(exposedAddress({ type: 'LoadBalancer', address: '192.0.2.10' }, '10.244.0.1')).toBe('192.0.2.10');
    expect(() => exposedAddress({ type: 'NodePort' }, undefined)).toThrow(
      /needs address.*KOSMOS_VC_NODE_ADDRESS/,
    );
    expect(() => exposedAddress({ type: 'LoadBalancer' }, '10.244.0.1')).toThrow(/needs address/);
  });

  it('opens only the API server pods of the operator, on their port, to any source', () => {
    const p = exposurePolicy(ref);
    expect(p.metadata!.namespace).toBe(isolationPolicy(ref, undefined).metadata!.namespace);
    expect(p.spec!.podSelector).toEqual({
      matchLabels: { 'app.kubernetes.io/name': 'kube-apiserver' },
      matchExpressions: [{ key: 'kosmos.io/control-plane', operator: 'Exists' }],
    });
    expect(p.spec!.ingress).toEqual([{ ports: [{ protocol: 'TCP', port: 6443 }] }]);
  });
});
