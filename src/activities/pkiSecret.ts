/**
 * A tenant's certificate set is kept in a Secret of its host namespace; the worker's state
 * directory holds a copy (docs/adr/0014). Before a step reads the files, `sync` makes the copy
 * the Secret's; a new set is stored before it replaces the copy (`commit`). A worker whose state
 * directory lost the files, or never had them, then works on the same CAs as every other worker,
 * where it would otherwise have issued new ones that no kubeconfig trusts.
 */
import type { V1Secret } from '@kubernetes/client-node';
import type { VirtualClusterRef } from '../api/virtualCluster.js';
import { isConflict, isNotFound } from '../api/kubeClient.js';
import { OriginLabel, hostNamespace } from '../clustertree/naming.js';
import {
  ensureCurrentFiles,
  isSetFile,
  readSet,
  setChecksum,
  writeSet,
  type PkiSet,
} from '../pki/controlPlanePki.js';
import { FILE_SOURCES, fileKey } from '../runtime/podWorkload.js';
import type { HostCluster } from './hostCluster.js';

/** Where the kubernetes runtime's pods mount the set from, too. */
export const PKI_SECRET = FILE_SOURCES.pki.name;
export const PKI_CHECKSUM_ANNOTATION = 'kosmos.io/pki-checksum';

const toKey = fileKey;
const toPath = (key: string): string => key.replaceAll('__', '/');

export interface PkiSecretDeps {
  host: HostCluster;
  /**
   * Creates the tenant's host namespace (with its labels) when it is missing; refuses for a
   * VirtualCluster that is gone or being deleted (nothing of it is made again).
   */
  ensureNamespace: (ref: VirtualClusterRef) => Promise<void>;
}

/** What the Secret held when read: a later write names its resourceVersion, so two writers never both win. */
export interface StoredPki {
  resourceVersion: string | undefined;
  /** The host namespace was not there (a new tenant): `commit` makes it while the set is made. */
  namespaceMissing?: boolean;
}

/**
 * Another worker stored a set in the meantime: this attempt fails (an activity's plain error is
 * retried) and its retry starts from that set.
 */
export class PkiConflictError extends Error {
  override readonly name = 'PkiConflictError';
  constructor(ref: VirtualClusterRef) {
    super(`the certificate set of ${ref.namespace}/${ref.name} was changed by another worker; retrying`);
  }
}

export function createPkiSecret(deps: PkiSecretDeps) {
  const core = deps.host.core;

  /**
   * The Secret, if any; `leaving` when the namespace is being deleted (the saga's undo of
   * deployClusterTree, or a retry after release): its Secret, an earlier tenant's or about to go,
   * counts as none, and nothing can be stored there until the namespace is gone.
   */
  async function read(
    ref: VirtualClusterRef,
  ): Promise<{ secret?: V1Secret; leaving: boolean; namespaceMissing?: boolean }> {
    const namespace = hostNamespace(ref);
    const absent = (e: unknown) => {
      if (isNotFound(e)) return undefined;
      throw e;
    };
    const ns = await core.readNamespace({ name: namespace }).catch(absent);
    if (ns?.metadata?.deletionTimestamp) return { leaving: true };
    if (!ns) return { leaving: false, namespaceMissing: true };
    const secret = await core.readNamespacedSecret({ name: PKI_SECRET, namespace }).catch(absent);
    return secret && !secret.metadata?.deletionTimestamp ? { secret, leaving: false } : { leaving: false };
  }

  /**
   * The set a Secret holds. Whoever may write Secrets in the host namespace may write this one
   * (clusterTree's host Role may): a key that is no file of a set is refused, never a path.
   */
  function filesOf(secret: V1Secret): Map<string, string> {
    const files = new Map<string, string>();
    for (const [key, value] of Object.entries(secret.data ?? {})) {
      const path = toPath(key);
      if (!isSetFile(path))
        throw new Error(
          `${secret.metadata?.namespace}/${PKI_SECRET} holds ${JSON.stringify(key)}, which is no file of a certificate set`,
        );
      files.set(path, Buffer.from(value, 'base64').toString('utf8'));
    }
    return files;
  }

  /** Stores `files` over the Secret as it was read (resourceVersion undefined: there was none). */
  async function store(ref: VirtualClusterRef, files: PkiSet, seen: StoredPki): Promise<void> {
    const namespace = hostNamespace(ref);
    const body: V1Secret = {
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'Opaque',
      metadata: {
        name: PKI_SECRET,
        namespace,
        // Not the tenant label clusterTree's informers select: this is no object of the tenant's.
        labels: { [OriginLabel.managedBy]: 'kosmos-vc', 'kosmos.io/virtual-cluster': ref.name },
        annotations: { [PKI_CHECKSUM_ANNOTATION]: setChecksum(files) },
        ...(seen.resourceVersion ? { resourceVersion: seen.resourceVersion } : {}),
      },
      data: Object.fromEntries(
        [...files].map(([path, text]) => [toKey(path), Buffer.from(text, 'utf8').toString('base64')]),
      ),
    };
    try {
      if (seen.resourceVersion) await core.replaceNamespacedSecret({ name: PKI_SECRET, namespace, body });
      else
        await core.createNamespacedSecret({ namespace, body }).catch(async (e: unknown) => {
          if (!isNotFound(e)) throw e;
          // The namespace is not there yet (no tenant network, or a set from before Secrets).
          await deps.ensureNamespace(ref);
          await core.createNamespacedSecret({ namespace, body });
        });
    } catch (e) {
      if (isConflict(e)) throw new PkiConflictError(ref);
      throw e;
    }
  }

  return {
    /**
     * Makes `dir` hold the Secret's set when the two differ; stores the set of `dir` when there
     * is no Secret yet (a tenant from before Secrets, completed first with what its version
     * lacked). Returns what it read, for `commit`, and whether `dir` was rewritten.
     */
    async sync(ref: VirtualClusterRef, dir: string): Promise<StoredPki & { rewritten: boolean }> {
      let { secret, leaving, namespaceMissing } = await read(ref);
      if (!secret && !leaving && (await readSet(dir))) {
        await ensureCurrentFiles(dir);
        // Another worker storing one first is as good: its set is taken below.
        await store(ref, (await readSet(dir))!, { resourceVersion: undefined }).catch((e: unknown) => {
          if (!(e instanceof PkiConflictError)) throw e;
        });
        ({ secret, leaving, namespaceMissing } = await read(ref));
      }
      // None, or a namespace on its way out: the copy is all there is; a later step stores it.
      if (!secret)
        return {
          resourceVersion: undefined,
          rewritten: false,
          ...(namespaceMissing ? { namespaceMissing } : {}),
        };
      const stored = filesOf(secret);
      const local = await readSet(dir);
      const rewritten = !local || setChecksum(local) !== setChecksum(stored);
      if (rewritten) await writeSet(dir, stored);
      return { resourceVersion: secret.metadata?.resourceVersion, rewritten };
    },

    /** The Secret's set, read only (a backup's: it never touches the copy a step may be writing). */
    async stored(ref: VirtualClusterRef): Promise<PkiSet | undefined> {
      const { secret } = await read(ref);
      return secret ? filesOf(secret) : undefined;
    },

    /**
     * writeControlPlanePki's commit: stores a new set over the one `sync` read. A new tenant's
     * host namespace, which the Secret needs, is made from now on, while the set is made (before,
     * after a first create that failed for the want of it).
     */
    commit(ref: VirtualClusterRef, seen: StoredPki): (files: PkiSet) => Promise<void> {
      const namespace = seen.namespaceMissing ? deps.ensureNamespace(ref) : undefined;
      // Awaited by the store; a set that fails first never stores, and leaves this unawaited.
      namespace?.catch(() => undefined);
      return async (files) => {
        await namespace;
        await store(ref, files, seen);
      };
    },
  };
}
