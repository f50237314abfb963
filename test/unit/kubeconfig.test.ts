import { KubeConfig } from '@kubernetes/client-node';
import { describe, expect, it } from 'vitest';
import { createCA, issueCertificate } from '../../src/pki/certificates.js';
import { renderKubeconfig } from '../../src/pki/kubeconfig.js';

describe('renderKubeconfig', () => {
  it('renders a kubeconfig that client-node loads with the embedded credentials', async () => {
    const ca = await createCA('ca');
    const admin = await issueCertificate(ca, {
      commonName: 'kubernetes-admin',
      organizations: ['system:masters'],
      usage: 'client',
    });
    const text = renderKubeconfig({
      clusterName: 'tenant1',
      server: 'https://127.0.0.1:6443',
      caPem: ca.certPem,
      userName: 'kubernetes-admin',
      certPem: admin.certPem,
      keyPem: admin.keyPem,
    });
    const kc = new KubeConfig();
    kc.loadFromString(text);
    expect(kc.getCurrentContext()).toBe('kubernetes-admin@tenant1');
    expect(kc.getCurrentCluster()?.server).toBe('https://127.0.0.1:6443');
    const dec = (s: string | undefined) => Buffer.from(s ?? '', 'base64').toString();
    expect(dec(kc.getCurrentCluster()?.caData)).toBe(ca.certPem);
    expect(dec(kc.getCurrentUser()?.certData)).toBe(admin.certPem);
    expect(dec(kc.getCurrentUser()?.keyData)).toBe(admin.keyPem);
    expect(text).not.toContain('BEGIN'); // credentials are base64 data fields, never raw PEM
  });
});
