/**
 * The operator's view of the host cluster: VirtualClusters, their status, kubeconfig Secrets
 * and the CRD. Everything that talks to the host API server goes through here.
 */
import {
  ApiextensionsV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubernetesObjectApi,
  PatchStrategy,
  Observable,
  loadYaml,
  setHeaderOptions,
  type ConfigurationOptions,
  type ObservableMiddleware,
  type RequestContext,
  type ResponseContext,
  type KubeConfig,
  type KubernetesObject,
  type V1Secret,
} from '@kubernetes/client-node';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  API_VERSION,
  GROUP,
  KIND,
  PLURAL,
  VERSION,
  VirtualCluster,
  type VirtualClusterRef,
  type VirtualClusterStatus,
} from '../api/virtualCluster.js';
import { isConflict, isNotFound, reuseConnections, statusCode } from '../api/kubeClient.js';
import { repoRoot } from '../runtime/binaries.js';

export const FIELD_MANAGER = 'kosmos-vc';

/** A status merge patch: any field may be null to remove it. */
type Nullable<T> = { [K in keyof T]?: T[K] | null };
export type StatusPatch = Nullable<Omit<VirtualClusterStatus, 'certificates'>> & {
  certificates?: Nullable<NonNullable<VirtualClusterStatus['certificates']>> | null;
};

const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

/** Options that hand `signal` to the request (client-node's fetch takes it from the context). */
function abortable(signal: AbortSignal): ConfigurationOptions<ObservableMiddleware> {
  return {
    middleware: [
      {
        pre: (request: RequestContext) => {
          request.setSignal(signal);
          return new Observable(Promise.resolve(request));
        },
        post: (response: ResponseContext) => new Observable(Promise.resolve(response)),
      },
    ],
    middlewareMergeStrategy: 'append',
  };
}

export class HostCluster {
  readonly core: CoreV1Api;
  readonly custom: CustomObjectsApi;
  readonly objects: KubernetesObjectApi;
  readonly extensions: ApiextensionsV1Api;

  constructor(readonly kubeConfig: KubeConfig) {
    reuseConnections(kubeConfig);
    this.core = kubeConfig.makeApiClient(CoreV1Api);
    this.custom = kubeConfig.makeApiClient(CustomObjectsApi);
    this.extensions = kubeConfig.makeApiClient(ApiextensionsV1Api);
    this.objects = KubernetesObjectApi.makeApiClient(kubeConfig);
  }

  private ids(ref: Pick<VirtualClusterRef, 'namespace' | 'name'>) {
    return { group: GROUP, version: VERSION, plural: PLURAL, namespace: ref.namespace, name: ref.name };
  }

  /** The VirtualCluster, or undefined when it is gone or belongs to another uid. */
  async getVirtualCluster(
    ref: Pick<VirtualClusterRef, 'namespace' | 'name'> & { uid?: string },
  ): Promise<VirtualCluster | undefined> {
    try {
      const vc = VirtualCluster.parse(await this.custom.getNamespacedCustomObject(this.ids(ref)));
      return ref.uid === undefined || vc.metadata.uid === ref.uid ? vc : undefined;
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  /**
   * True when a write failed because the object is gone or is now another object of the same
   * name (a uid in the patch that differs from the live object's is refused with 409 or 422).
   */
  private async replacedOrGone(ref: VirtualClusterRef, e: unknown): Promise<boolean> {
    if (isNotFound(e) || isConflict(e)) return true;
    if (statusCode(e) !== 422) return false;
    const live = await this.getVirtualCluster({ namespace: ref.namespace, name: ref.name });
    return live?.metadata.uid !== ref.uid;
  }

  /** VirtualClusters in `namespace`, or in every namespace. */
  async listVirtualClusters(namespace?: string): Promise<{ items: unknown[]; resourceVersion: string }> {
    const ids = { group: GROUP, version: VERSION, plural: PLURAL };
    const raw: unknown = namespace
      ? await this.custom.listNamespacedCustomObject({ ...ids, namespace })
      : await this.custom.listClusterCustomObject(ids);
    const list = raw as {
      items: unknown[];
      metadata: { resourceVersion: string };
    };
    return { items: list.items, resourceVersion: list.metadata.resourceVersion };
  }

  /**
   * Merge-patches status (a null field is removed); false when the object is gone. `signal`
   * aborts the request: the client stops waiting (a write the server already took may land).
   */
  async patchStatus(ref: VirtualClusterRef, status: StatusPatch, signal?: AbortSignal): Promise<boolean> {
    try {
      await this.custom.patchNamespacedCustomObjectStatus(
        { ...this.ids(ref), body: { metadata: { uid: ref.uid }, status }, fieldManager: FIELD_MANAGER },
        signal ? setHeaderOptions('Content-Type', PatchStrategy.MergePatch, abortable(signal)) : merge,
      );
      return true;
    } catch (e) {
      // Aborted: no further call either.
      if (!signal?.aborted && (await this.replacedOrGone(ref, e))) return false;
      throw e;
    }
  }

  /** Writes (or clears, with null) spec.kubeconfig. */
  async patchSpecKubeconfig(ref: VirtualClusterRef, kubeconfigBase64: string | null): Promise<boolean> {
    try {
      await this.custom.patchNamespacedCustomObject(
        {
          ...this.ids(ref),
          body: { metadata: { uid: ref.uid }, spec: { kubeconfig: kubeconfigBase64 } },
          fieldManager: FIELD_MANAGER,
        },
        merge,
      );
      return true;
    } catch (e) {
      if (await this.replacedOrGone(ref, e)) return false;
      throw e;
    }
  }

  /** Sets metadata.finalizers, guarded by resourceVersion (a conflict means: look again). */
  async setFinalizers(ref: VirtualClusterRef, finalizers: string[], resourceVersion: string): Promise<void> {
    await this.custom.patchNamespacedCustomObject(
      {
        ...this.ids(ref),
        body: { metadata: { uid: ref.uid, resourceVersion, finalizers } },
        fieldManager: FIELD_MANAGER,
      },
      merge,
    );
  }

  /** Creates or replaces a Secret owned by the VirtualCluster. */
  async applySecret(
    ref: VirtualClusterRef,
    name: string,
    data: Record<string, string>,
    labels: Record<string, string>,
  ): Promise<void> {
    const body: V1Secret = {
      apiVersion: 'v1',
      kind: 'Secret',
      type: 'Opaque',
      metadata: {
        name,
        namespace: ref.namespace,
        labels,
        ownerReferences: [
          { apiVersion: API_VERSION, kind: KIND, name: ref.name, uid: ref.uid, controller: true },
        ],
      },
      data: Object.fromEntries(Object.entries(data).map(([k, v]) => [k, Buffer.from(v).toString('base64')])),
    };
    try {
      await this.core.createNamespacedSecret({ namespace: ref.namespace, body, fieldManager: FIELD_MANAGER });
    } catch (e) {
      if (!isConflict(e)) throw e;
      await this.core.replaceNamespacedSecret({
        name,
        namespace: ref.namespace,
        body,
        fieldManager: FIELD_MANAGER,
      });
    }
  }

  async deleteSecret(namespace: string, name: string): Promise<void> {
    try {
      await this.core.deleteNamespacedSecret({ name, namespace });
    } catch (e) {
      if (!isNotFound(e)) throw e;
    }
  }

  async getSecret(namespace: string, name: string): Promise<V1Secret | undefined> {
    try {
      return await this.core.readNamespacedSecret({ name, namespace });
    } catch (e) {
      if (isNotFound(e)) return undefined;
      throw e;
    }
  }

  /** Server-side applies the VirtualCluster CRD and waits until it is served. */
  async applyCRD(timeoutMs = 30_000): Promise<void> {
    const file = join(repoRoot(), 'config', 'crd', 'virtualclusters.kosmos.io.yaml');
    // loadYaml gives the typed model the client serializes from (x-kubernetes-* fields intact).
    const crd = loadYaml<KubernetesObject>(await readFile(file, 'utf8'));
    await this.objects.patch(crd, undefined, undefined, FIELD_MANAGER, true, PatchStrategy.ServerSideApply);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const got = await this.extensions.readCustomResourceDefinition({ name: `${PLURAL}.${GROUP}` });
      if (got.status?.conditions?.some((c) => c.type === 'Established' && c.status === 'True')) return;
      if (Date.now() > deadline) throw new Error('the VirtualCluster CRD was not established in time');
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}
