import { describe, expect, it } from 'vitest';
import { API_VERSION, KIND, VirtualCluster, cidrHolds, parseIPv4Cidr } from '../../src/api/virtualCluster.js';
import { crdSpecSchema } from '../support/crd.js';
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
