/**
 * `kosmos-vc rotate-ca <vc>`: rotates a VirtualCluster's cluster CA. It raises
 * spec.certificates.caRotation by one (the spec stays the one source of truth, as with resize)
 * and follows the status until the workflow has a new CA in use. Old and new kubeconfigs both
 * work for spec.certificates.caOverlap; then the old CA is retired.
 */
import { PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { hostCluster } from './host.js';
import { isConflict } from '../api/kubeClient.js';
import { CERTIFICATE_DEFAULTS, GROUP, PLURAL, VERSION } from '../api/virtualCluster.js';
import { CommandError } from './inspect.js';
import { UsageError, parseTarget } from './resize.js';

export interface RotateCARequest {
  target: string;
  namespace?: string;
  kubeconfig?: string;
  /** Seconds to follow the rotation; 0 only requests it. */
  timeout?: string;
}

/** Exit code: 0 the new CA is in use, 1 failed or timed out. */
export async function rotateCA(r: RotateCARequest, out: (line: string) => void): Promise<number> {
  const { namespace, name } = parseTarget(r.target, r.namespace);
  const timeout = Number(r.timeout ?? 300);
  if (!Number.isFinite(timeout) || timeout < 0) throw new UsageError('--timeout must be a number of seconds');
  const host = hostCluster(r.kubeconfig);
  const ref = { namespace, name };

  let generation = 0;
  for (let attempt = 1; ; attempt++) {
    const vc = await host.getVirtualCluster(ref);
    if (!vc) throw new CommandError(`VirtualCluster ${namespace}/${name} not found`);
    const status = vc.status?.certificates;
    if (status?.previousCARetiresAt)
      throw new CommandError(
        `CA rotation ${status.caRotation ?? '?'} of ${namespace}/${name} is still in progress: the previous CA is trusted until ${status.previousCARetiresAt}; rotate again after that`,
      );
    generation = Math.max(vc.spec.certificates?.caRotation ?? 0, status?.caRotation ?? 0) + 1;
    try {
      await host.custom.patchNamespacedCustomObject(
        {
          group: GROUP,
          version: VERSION,
          plural: PLURAL,
          namespace,
          name,
          body: {
            metadata: { resourceVersion: vc.metadata.resourceVersion },
            spec: { certificates: { caRotation: generation } },
          },
        },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
      const overlap = vc.spec.certificates?.caOverlap ?? CERTIFICATE_DEFAULTS.caOverlap;
      out(
        `${namespace}/${name}: CA rotation ${generation} requested; old and new kubeconfigs both work for ${overlap}, then the old CA is retired`,
      );
      break;
    } catch (e) {
      if (!isConflict(e) || attempt >= 5) throw e;
    }
  }
  if (timeout === 0) return 0;

  const started = Date.now();
  for (;;) {
    const vc = await host.getVirtualCluster(ref);
    if (!vc) {
      out('the VirtualCluster was deleted');
      return 1;
    }
    const c = vc.status?.certificates;
    const cond = vc.status?.conditions?.find((x) => x.type === 'CertificatesValid');
    const secs = Math.round((Date.now() - started) / 1000);
    if ((c?.caRotation ?? 0) >= generation) {
      out(
        `done in ${secs}s: new CA ${c?.caFingerprint ?? '?'}; the previous CA (${c?.previousCAFingerprint ?? 'already retired'}) is trusted until ${c?.previousCARetiresAt ?? 'now'}`,
      );
      out(`the new kubeconfig: kosmos-vc kubeconfig ${namespace}/${name}`);
      return 0;
    }
    // This rotation's failure only (an earlier renewal's may still be shown meanwhile).
    if (cond?.reason === 'RenewalFailed' && cond.message.startsWith('rotateCA failed')) {
      out(`rotation failed: ${cond.message}`);
      return 1;
    }
    if (vc.status?.phase === 'Failed') {
      out(`the VirtualCluster failed: ${vc.status.message ?? ''}`);
      return 1;
    }
    if (Date.now() - started > timeout * 1000) {
      out(
        `gave up after ${secs}s; the workflow keeps working on it (kosmos-vc describe ${namespace}/${name})`,
      );
      return 1;
    }
    await new Promise((res) => setTimeout(res, 500));
  }
}
