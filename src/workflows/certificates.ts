/**
 * When a tenant's certificates need work, decided from what the certificate activities reported
 * and the spec: renewal before expiry, a CA rotation asked for by spec.certificates.caRotation,
 * and the old CA's retirement when the overlap ends. Pure and deterministic (workflow code).
 */
import type { CertificateAction, CertificateState, StatusReport } from '../activities/types.js';
import type { DesiredSpec } from './definitions.js';

/** A renewal that falls due by time waits at least this long after the last certificate work. */
export const RENEWAL_SPACING_MS = 30_000;
/** After failed certificate work, nothing is tried again for this long. */
export const CERTIFICATE_RETRY_MS = 60_000;

/** When certificate work last ended, and whether it failed: what spaces the next. */
export interface CertificateTiming {
  renewNotBefore: number;
  retryAfter: number;
}

/** The part of spec.certificates whose change re-issues the leaves at once. */
export function certificatePolicy(spec: DesiredSpec): string {
  const c = spec.certificates;
  return JSON.stringify({ validity: c?.validity ?? null, renewBefore: c?.renewBefore ?? null });
}

/**
 * What is due now, if anything: retiring the old CA, starting a rotation, renewal after a policy
 * change (at once), or renewal by time (spaced, so a lifetime close to renewBefore cannot spin).
 */
export function certificateWork(
  certs: CertificateState,
  spec: DesiredSpec,
  appliedPolicy: string | undefined,
  now: number,
  timing: CertificateTiming,
): CertificateAction | undefined {
  if (now < timing.retryAfter) return undefined;
  if (certs.previousCARetiresAt && now >= Date.parse(certs.previousCARetiresAt))
    return { action: 'retireCA' };
  const wanted = spec.certificates?.caRotation ?? 0;
  if (wanted > certs.caRotation && !certs.previousCAFingerprint)
    return { action: 'rotateCA', generation: wanted };
  if (appliedPolicy !== certificatePolicy(spec)) return { action: 'renew' };
  if (now >= Date.parse(certs.renewAt) && now >= timing.renewNotBefore) return { action: 'renew' };
  return undefined;
}

/** When certificateWork next has something to do as time passes, as a timestamp. */
export function certificateDeadline(certs: CertificateState, timing: CertificateTiming): number {
  const renew = Math.max(Date.parse(certs.renewAt), timing.renewNotBefore);
  const due = certs.previousCARetiresAt ? Math.min(renew, Date.parse(certs.previousCARetiresAt)) : renew;
  return Math.max(due, timing.retryAfter);
}

/** The CertificatesValid condition. */
export function certificateCondition(
  certs: CertificateState,
  now: number,
  failure?: string,
): { ok: boolean; reason: string; message: string } {
  const rotation = certs.previousCARetiresAt
    ? `; CA rotation ${certs.caRotation} in progress: the previous CA (${certs.previousCAFingerprint ?? '?'}) is trusted until ${certs.previousCARetiresAt}`
    : '';
  const summary = `leaf certificates valid until ${certs.notAfter}, renewed from ${certs.renewAt}; CA ${certs.caFingerprint} valid until ${certs.caNotAfter}${rotation}`;
  if (now >= Date.parse(certs.notAfter))
    return { ok: false, reason: 'Expired', message: `${failure ? `${failure}; ` : ''}${summary}` };
  if (failure) return { ok: true, reason: 'RenewalFailed', message: `${failure}; ${summary}` };
  return { ok: true, reason: rotation ? 'CARotating' : 'Valid', message: summary };
}

/** status.certificates (merge-patched: a field that no longer applies is null). */
export function certificatesStatus(certs: CertificateState): NonNullable<StatusReport['certificates']> {
  return {
    notAfter: certs.notAfter,
    renewAt: certs.renewAt,
    caNotAfter: certs.caNotAfter,
    caFingerprint: certs.caFingerprint,
    caRotation: certs.caRotation,
    previousCAFingerprint: certs.previousCAFingerprint ?? null,
    previousCARetiresAt: certs.previousCARetiresAt ?? null,
  };
}

/** A state from an activity result that may come from a run before renewal (no expiry in it). */
export function certificateStateOf(result: Partial<CertificateState>): CertificateState | undefined {
  const { notAfter, renewAt, caNotAfter, caFingerprint, caRotation } = result;
  if (!notAfter || !renewAt || !caNotAfter || !caFingerprint) return undefined;
  return {
    notAfter,
    renewAt,
    caNotAfter,
    caFingerprint,
    caRotation: caRotation ?? 0,
    ...(result.previousCAFingerprint ? { previousCAFingerprint: result.previousCAFingerprint } : {}),
    ...(result.previousCARetiresAt ? { previousCARetiresAt: result.previousCARetiresAt } : {}),
  };
}
