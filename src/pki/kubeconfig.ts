/** Renders kubeconfig files with embedded credentials. */
import { stringify } from 'yaml';

export interface KubeconfigInput {
  clusterName: string;
  server: string;
  caPem: string;
  userName: string;
  certPem: string;
  keyPem: string;
  namespace?: string;
}

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');

export function renderKubeconfig(input: KubeconfigInput): string {
  const context = `${input.userName}@${input.clusterName}`;
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [
      {
        name: input.clusterName,
        cluster: { server: input.server, 'certificate-authority-data': b64(input.caPem) },
      },
    ],
    users: [
      {
        name: input.userName,
        user: { 'client-certificate-data': b64(input.certPem), 'client-key-data': b64(input.keyPem) },
      },
    ],
    contexts: [
      {
        name: context,
        context: {
          cluster: input.clusterName,
          user: input.userName,
          ...(input.namespace ? { namespace: input.namespace } : {}),
        },
      },
    ],
    'current-context': context,
    preferences: {},
  });
}
