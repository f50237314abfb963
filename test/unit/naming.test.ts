import { describe, expect, it } from 'vitest';
import {
  MAX_NAME_LENGTH,
  hostName,
  hostNamespace,
  originAnnotations,
  originLabels,
  ownedBy,
} from '../../src/clustertree/naming.js';

const dnsLabel = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const tenantA = { namespace: 'team-a', name: 'vc', uid: '11111111-1111-1111-1111-111111111111' };
const tenantB = { namespace: 'team-b', name: 'vc', uid: '22222222-2222-2222-2222-222222222222' };

describe('host names', () => {
  it('are readable, stable DNS labels of at most 63 characters', () => {
    expect(hostName('default', 'web-0')).toMatch(/^web-0-x-default-[0-9a-f]{10}$/);
    expect(hostName('default', 'web-0')).toBe(hostName('default', 'web-0'));
    for (const [ns, name] of [
      ['default', 'x'],
      ['n'.repeat(63), 'p'.repeat(253)],
      ['a', 'b.c.d'],
      ['kube-system', 'coredns-7db6d8ff4d-abcde'],
    ] as const) {
      const h = hostName(ns, name);
      expect(h.length).toBeLessThanOrEqual(MAX_NAME_LENGTH);
      expect(h).toMatch(dnsLabel);
    }
  });

  it('never collide for pairs that only look alike, or for long names cut to the same prefix', () => {
    expect(hostName('b-x-c', 'a')).not.toBe(hostName('c', 'a-x-b'));
    const long = 'p'.repeat(100);
    expect(hostName('ns', `${long}1`)).not.toBe(hostName('ns', `${long}2`));
    const names = new Set<string>();
    for (let i = 0; i < 2000; i++) names.add(hostName(`ns-${i % 7}`, `pod-${i}`));
    expect(names.size).toBe(2000);
  });

  it('give each tenant, and each re-created tenant, a host namespace of its own', () => {
    const a = hostNamespace(tenantA);
    expect(a).toMatch(dnsLabel);
    expect(a.startsWith('kvc-team-a-vc-')).toBe(true);
    expect(a).not.toBe(hostNamespace(tenantB));
    expect(a).not.toBe(hostNamespace({ ...tenantA, uid: '33333333-3333-3333-3333-333333333333' }));
    expect(
      hostNamespace({ ...tenantA, name: 'v'.repeat(63), namespace: 'n'.repeat(63) }).length,
    ).toBeLessThanOrEqual(63);
  });
});

describe('origin', () => {
  it('labels select one tenant only and the annotation keeps the full names', () => {
    const labels = originLabels({ tenant: tenantA, namespace: 'default' });
    for (const v of Object.values(labels)) expect(v.length).toBeLessThanOrEqual(63);
    expect(ownedBy({ labels }, tenantA)).toBe(true);
    expect(ownedBy({ labels }, tenantB)).toBe(false);
    expect(ownedBy({ labels: { 'kosmos.io/tenant': labels['kosmos.io/tenant']! } }, tenantA)).toBe(false);
    expect(ownedBy(undefined, tenantA)).toBe(false);
    const name = 'p'.repeat(200);
    const origin = JSON.parse(
      originAnnotations({ tenant: tenantA, namespace: 'default', name, uid: 'u-1' })['kosmos.io/origin']!,
    ) as Record<string, string>;
    expect(origin).toEqual({
      tenant: 'team-a/vc',
      tenantUid: tenantA.uid,
      namespace: 'default',
      name,
      uid: 'u-1',
    });
  });
});
