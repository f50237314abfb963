/** Renders kubeconfig files with embedded credentials, or naming the files that hold them. */
import { stringify } from 'yaml';

/**
 * A client certificate, or a bearer token (a service account's), or the paths of a certificate
 * and key: client-go re-reads those files and reconnects when they change (a renewal), where an
 * embedded certificate lasts as long as the process that read it.
 */
export type KubeconfigCredentials =
  { certPem: string; keyPem: string } | { token: string } | { certFile: string; keyFile: string };

export type KubeconfigInput = {
  clusterName: string;
  server: string;
  /** Empty: trust the system's CAs. */
  caPem: string;
  /** The CA bundle's path instead of caPem. */
  caFile?: string;
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
          ...(input.caFile
            ? { 'certificate-authority': input.caFile }
            : input.caPem
              ? { 'certificate-authority-data': b64(input.caPem) }
              : {}),
        },
      },
    ],
    users: [
      {
        name: input.userName,
        user:
          'token' in input
            ? { token: input.token }
            : 'certFile' in input
              ? { 'client-certificate': input.certFile, 'client-key': input.keyFile }
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
