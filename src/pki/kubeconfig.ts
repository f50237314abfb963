/** Renders kubeconfig files with embedded credentials. */
import { stringify } from 'yaml';

/** A client certificate, or a bearer token (a service account's). */
export type KubeconfigCredentials = { certPem: string; keyPem: string } | { token: string };

export type KubeconfigInput = {
  clusterName: string;
  server: string;
  /** Empty: trust the system's CAs. */
  caPem: string;
  userName: string;
  namespace?: string;
} & KubeconfigCredentials;

const b64 = (s: string): string => Buffer.from(s, 'utf8').toString('base64');

export function renderKubeconfig(input: KubeconfigInput): string {
  const context = `${input.userName}@${input.clusterName}`;
  return stringify({
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [
      {
        name: input.clusterName,
        cluster: {
          server: input.server,
          ...(input.caPem ? { 'certificate-authority-data': b64(input.caPem) } : {}),
        },
      },
    ],
    users: [
      {
        name: input.userName,
        user:
          'token' in input
            ? { token: input.token }
            : { 'client-certificate-data': b64(input.certPem), 'client-key-data': b64(input.keyPem) },
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
