/** The host cluster a one-shot command reads: `--kubeconfig`, else KUBECONFIG as kubectl reads it. */
import { KubeConfig } from '@kubernetes/client-node';
import { HostCluster } from '../activities/hostCluster.js';

export function hostCluster(kubeconfigPath: string | undefined): HostCluster {
  const kc = new KubeConfig();
  if (kubeconfigPath) kc.loadFromFile(kubeconfigPath);
  else kc.loadFromDefault();
  return new HostCluster(kc);
}
