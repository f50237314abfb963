import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import {
  API_VERSION,
  DEFAULT_POD_SECURITY,
  DEFAULT_SERVICE_CIDR,
  KIND,
  VirtualCluster,
  cidrHolds,
  parseIPv4Cidr,
} from '../../src/api/virtualCluster.js';
import type { DesiredSpec } from '../../src/workflows/definitions.js';
import { samePromotion, sameDesiredSpec } from '../../src/workflows/spec.js';
import { specExamples } from '../support/specExamples.js';

const object = (name: string, spec: Record<string, unknown>) => ({
  apiVersion: API_VERSION,
  kind: KIND,
  metadata: { name, namespace: 'default', uid: '0b5ad3a4-8a8e-4a5e-9d36-1a2b3c4d5e6f' },
  spec,
});

describe('VirtualCluster schema', () => {
  it.each(specExamples)('$title: valid=$valid', ({ name, spec, valid }) => {
    expect(VirtualCluster.safeParse(object(name ?? 'tenant', spec)).success).toBe(valid);
  });

  it('defaults the service CIDR', () => {
    expect(VirtualCluster.parse(object('t', {})).spec.serviceCIDR).toBe('10.96.0.0/12');
  });

  it('parses CIDRs the way the API server does', () => {
    expect(parseIPv4Cidr('10.96.0.0/12')).toEqual({ base: (10 << 24) + (96 << 16), prefix: 12 });
    expect(parseIPv4Cidr('0.0.0.0/0')).toEqual({ base: 0, prefix: 0 });
    expect(parseIPv4Cidr('10.96.0.0/33')).toBeUndefined();
    expect(parseIPv4Cidr('10.96.0.0/12/1')).toBeUndefined();
  });

  it('declares in the CRD every spec field the zod schema has', async () => {
    const crdFields = Object.keys((await crdSpecSchema()).properties!).sort();
    const zodFields = Object.keys(VirtualCluster.shape.spec.unwrap().shape).sort();
    expect(crdFields).toEqual(zodFields);
  });

  it('knows every default the CRD declares in spec (the workflow compares specs with them: src/workflows/spec.ts)', async () => {
    const defaults: Record<string, unknown> = {};
    const walk = (schema: SchemaNode, path: string): void => {
      if (schema.default !== undefined) defaults[path] = schema.default;
      for (const [k, v] of Object.entries(schema.properties ?? {})) walk(v, path ? `${path}.${k}` : k);
      if (schema.items) walk(schema.items, `${path}[]`);
    };
    walk(await crdSpecSchema(), '');
    expect(defaults).toEqual({ serviceCIDR: DEFAULT_SERVICE_CIDR, podSecurity: DEFAULT_POD_SECURITY });
  });
});

interface SchemaNode {
  default?: unknown;
  properties?: Record<string, SchemaNode>;
  items?: SchemaNode;
}

async function crdSpecSchema(): Promise<SchemaNode> {
  const crd = parse(
    await readFile(new URL('../../config/crd/virtualclusters.kosmos.io.yaml', import.meta.url), 'utf8'),
  ) as { spec: { versions: { schema: { openAPIV3Schema: { properties: { spec: SchemaNode } } } }[] } };
  return crd.spec.versions[0]!.schema.openAPIV3Schema.properties.spec;
}

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

describe('cidrHolds', () => {
  it('holds a network only when all of it lies inside', () => {
    expect(cidrHolds('10.96.0.0/12', '10.96.0.0/12')).toBe(true);
    expect(cidrHolds('10.96.0.0/12', '10.96.0.0/16')).toBe(true); // kind's host range in the default
    expect(cidrHolds('10.96.0.0/12', '10.111.0.0/16')).toBe(true);
    expect(cidrHolds('10.96.0.0/12', '10.112.0.0/16')).toBe(false); // just past its end
    expect(cidrHolds('10.96.0.0/16', '10.96.0.0/12')).toBe(false); // smaller than the host's
    expect(cidrHolds('10.96.0.0/30', '10.96.0.0/12')).toBe(false);
    expect(cidrHolds('10.100.0.0/16', '10.96.0.0/12')).toBe(false);
    expect(cidrHolds('0.0.0.0/0', '192.168.0.0/24')).toBe(true);
    expect(cidrHolds('10.96.0.0/12', 'fd00::/108')).toBe(false);
  });
});
