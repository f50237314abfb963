/**
 * ClusterTrustBundle projections: the host ConfigMap holds what the tenant's kubelet would have
 * written, and the host pod projects that ConfigMap with the same paths and optionality.
 */
import type { V1Pod } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { trustBundleConfigMapName } from '../../src/clustertree/naming.js';
import { hostPodFor, type TenantContext } from '../../src/clustertree/translate.js';
import { selectorMatches, trustBundleData, type TrustBundle } from '../../src/clustertree/trustBundles.js';

const cert = (n: string) => `-----BEGIN CERTIFICATE-----\n${n}\n-----END CERTIFICATE-----\n`;
const bundles: TrustBundle[] = [
  { name: 'one', signerName: 'example.com/s', labels: { team: 'a' }, pem: cert('A') },
  { name: 'two', signerName: 'example.com/s', labels: { team: 'b' }, pem: cert('B') + cert('A') },
  { name: 'other', signerName: 'example.com/t', labels: { team: 'a' }, pem: cert('C') },
  { name: 'plain', labels: {}, pem: cert('D') },
];

const pod = (sources: object[]): V1Pod => ({
  metadata: { name: 'p', namespace: 'ns', uid: 'u' },
  spec: {
    nodeName: 'node-a',
    containers: [{ name: 'c', image: 'i' }],
    volumes: [{ name: 'ctb', projected: { sources: sources } }],
  },
});

describe('ClusterTrustBundle projections', () => {
  it('matches label selectors as the API does', () => {
    expect(selectorMatches({}, { a: '1' })).toBe(true);
    expect(selectorMatches({ matchLabels: { a: '1' } }, { a: '1', b: '2' })).toBe(true);
    expect(selectorMatches({ matchLabels: { a: '2' } }, { a: '1' })).toBe(false);
    expect(
      selectorMatches({ matchExpressions: [{ key: 'a', operator: 'In', values: ['1', '3'] }] }, { a: '1' }),
    ).toBe(true);
    expect(
      selectorMatches({ matchExpressions: [{ key: 'a', operator: 'NotIn', values: ['1'] }] }, { a: '1' }),
    ).toBe(false);
    expect(selectorMatches({ matchExpressions: [{ key: 'a', operator: 'Exists' }] }, {})).toBe(false);
    expect(selectorMatches({ matchExpressions: [{ key: 'a', operator: 'DoesNotExist' }] }, {})).toBe(true);
  });

  it('writes a bundle by name, or every bundle of a signer the selector matches, each certificate once', () => {
    const data = trustBundleData(
      pod([
        { clusterTrustBundle: { name: 'plain', path: 'plain.pem' } },
        { clusterTrustBundle: { signerName: 'example.com/s', labelSelector: {}, path: 'all.pem' } },
        {
          clusterTrustBundle: {
            signerName: 'example.com/s',
            labelSelector: { matchLabels: { team: 'b' } },
            path: 'b.pem',
          },
        },
        // No selector matches nothing; a missing name matches nothing.
        { clusterTrustBundle: { signerName: 'example.com/s', path: 'none.pem', optional: true } },
        { clusterTrustBundle: { name: 'missing', path: 'missing.pem' } },
      ]),
      bundles,
    );
    // The optional source that matches nothing is an empty file; the required one has no key.
    expect(data).toEqual({
      'ctb.0': cert('D'),
      'ctb.1': cert('A') + cert('B'),
      'ctb.2': cert('B') + cert('A'),
      'ctb.3': '',
    });
  });

  it('projects the host ConfigMap with the same paths and optionality', () => {
    const ctx: TenantContext = {
      tenant: { namespace: 't', name: 'vc', uid: 'x' },
      hostNamespace: 'kvc-t-vc',
    };
    const h = hostPodFor(
      ctx,
      pod([{ clusterTrustBundle: { signerName: 's', labelSelector: {}, path: 'x.pem', optional: true } }]),
      'node-a',
    );
    expect(h.spec?.volumes?.[0]?.projected?.sources?.[0]).toEqual({
      configMap: {
        name: trustBundleConfigMapName('ns', 'p'),
        items: [{ key: 'ctb.0', path: 'x.pem' }],
        optional: true,
      },
    });
  });
});
