/**
 * The workflow's comparison of desired specs (src/workflows/spec.ts): a spec from before a CRD
 * default is the same spec with it; anything else that differs is a change.
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_POD_SECURITY, DEFAULT_SERVICE_CIDR } from '../../src/api/defaults.js';
import type { DesiredSpec } from '../../src/workflows/definitions.js';
import { samePromotion, sameDesiredSpec } from '../../src/workflows/spec.js';
import { crdSpecSchema, schemaDefaults } from '../support/crd.js';

describe('the CRD defaults the workflow compares with', () => {
  it('are every default the CRD declares in spec, and the comparison fills each in', async () => {
    const defaults = schemaDefaults(await crdSpecSchema());
    expect(defaults).toEqual({ serviceCIDR: DEFAULT_SERVICE_CIDR, podSecurity: DEFAULT_POD_SECURITY });
    // A default at a nested path would need more than a top-level fill: this says so first.
    for (const [path, value] of Object.entries(defaults)) {
      expect(path).toMatch(/^\w+$/);
      expect(sameDesiredSpec({} as DesiredSpec, { [path]: value } as DesiredSpec)).toBe(true);
    }
  });
});

describe('comparing desired specs in the workflow', () => {
  it('takes a spec from before a CRD default as the same spec with the default, whatever the key order', () => {
    const old = { serviceCIDR: '10.96.0.0/12', promoteResources: { nodes: ['a'], resources: { cpu: 2 } } };
    const served = {
      promoteResources: { resources: { cpu: 2 }, nodes: ['a'] },
      podSecurity: 'baseline' as const,
      serviceCIDR: '10.96.0.0/12',
    };
    expect(sameDesiredSpec(old, served)).toBe(true);
    expect(sameDesiredSpec(served, old)).toBe(true);
    // A spec from before serviceCIDR had its default.
    expect(sameDesiredSpec({} as DesiredSpec, { serviceCIDR: DEFAULT_SERVICE_CIDR })).toBe(true);
  });

  it('tells a change from a default', () => {
    const old = { serviceCIDR: '10.96.0.0/12' };
    expect(sameDesiredSpec(old, { ...old, podSecurity: 'privileged' })).toBe(false);
    expect(sameDesiredSpec(old, { serviceCIDR: '10.100.0.0/16' })).toBe(false);
    expect(sameDesiredSpec(old, { ...old, sleep: false })).toBe(false);
    expect(sameDesiredSpec(old, { ...old, promoteResources: { nodes: ['a'] } })).toBe(false);
    expect(sameDesiredSpec({ ...old, certSANs: ['a', 'b'] }, { ...old, certSANs: ['b', 'a'] })).toBe(false);
  });

  it('compares spec.promoteResources alone, absent as empty', () => {
    const serviceCIDR = DEFAULT_SERVICE_CIDR;
    expect(samePromotion({ serviceCIDR }, { serviceCIDR, promoteResources: {} })).toBe(true);
    expect(samePromotion({ serviceCIDR, sleep: true }, { serviceCIDR, promoteResources: {} })).toBe(true);
    expect(
      samePromotion(
        { serviceCIDR, promoteResources: { nodes: ['a'], resources: { cpu: 2 } } },
        { serviceCIDR, promoteResources: { resources: { cpu: 2 }, nodes: ['a'] } },
      ),
    ).toBe(true);
    expect(samePromotion({ serviceCIDR }, { serviceCIDR, promoteResources: { nodes: ['a'] } })).toBe(false);
  });
});
