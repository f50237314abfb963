import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readSet, writeControlPlanePki } from '../../src/pki/controlPlanePki.js';
import type { Binaries } from '../../src/runtime/binaries.js';
import {
  apiserverSpec,
  controllerManagerSpec,
  etcdSpec,
  IMAGE_PROGRAMS,
  oneProcessSpec,
  placeInHost,
  placeOnMachine,
  schedulerSpec,
  type ControlPlaneLayout,
  type Placement,
} from '../../src/runtime/controlPlane.js';
import { reloadingKubeconfig, renderKubeconfigs } from '../../src/runtime/kubeconfigs.js';
import { hashSpec } from '../../src/runtime/processRuntime.js';
import { renderWorkload } from '../../src/runtime/podWorkload.js';
import type { V1StatefulSet } from '@kubernetes/client-node';
import { parse } from 'yaml';

const ports = {
  etcdClient: 21000,
  etcdPeer: 21001,
  apiserver: 21002,
  controllerManager: 21003,
  scheduler: 21004,
};
const tenant: ControlPlaneLayout = {
  id: 't-a-1',
  dir: '/state/tenants/t-a-1',
  address: '127.0.0.1',
  bindAddress: '0.0.0.0',
  advertiseAddress: '10.250.0.1',
  ports,
  serviceCIDR: '10.96.0.0/12',
  auditLog: true,
};
const host: ControlPlaneLayout = {
  id: 'host',
  dir: '/state/host',
  address: '127.0.0.1',
  ports,
  serviceCIDR: '10.96.0.0/12',
  etcdUnsafeNoFsync: true,
  judgesNodes: true,
};
const bins = {
  etcd: '/t/etcd',
  kubeApiserver: '/t/kube-apiserver',
  kubeControllerManager: '/t/kcm',
  kubeScheduler: '/t/ks',
} as Binaries;
const builders = { etcdSpec, apiserverSpec, controllerManagerSpec, schedulerSpec };

/** A placement as pods have it: files where they are mounted, components behind Services. */
const inPods: Placement = {
  id: 't-a-1',
  serviceCIDR: '10.96.0.0/12',
  paths: {
    pki: '/etc/kosmos-vc/pki',
    kubeconfigs: '/etc/kosmos-vc/kubeconfigs',
    etcdData: '/var/lib/etcd',
    auditPolicy: '/etc/kosmos-vc/audit/policy.yaml',
    auditLog: '/var/log/kosmos-vc/audit.log',
  },
  listen: { etcd: '0.0.0.0', apiserver: '0.0.0.0', controllerManager: '0.0.0.0', scheduler: '0.0.0.0' },
  ports: { etcdClient: 2379, etcdPeer: 2380, apiserver: 6443, controllerManager: 10257, scheduler: 10259 },
  etcdHost: 'etcd.kvc-ns.svc',
  apiserverURL: 'https://kosmos-apiserver.kvc-ns.svc:443',
  advertise: { address: '$(POD_IP)', endpoint: true },
  probe: { host: '10.244.0.9', pki: '/state/tenants/t-a-1/pki' },
  auditLog: true,
};

/** The tenant of `tenant`'s layout, placed as pods of its host namespace. */
const tenantInPods = {
  id: 't-a-1',
  namespace: 'kvc-ns',
  serviceCIDR: '10.96.0.0/12',
  apiService: 'kosmos-apiserver',
  probePki: '/state/tenants/t-a-1/pki',
};

let root: string;
let pkiKeys: Set<string>;
let kubeconfigKeys: Set<string>;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'kvc-cp-'));
  const pki = join(root, 'pki');
  await writeControlPlanePki(pki, {
    clusterName: 'c',
    serviceCIDR: '10.96.0.0/12',
    advertiseAddress: '127.0.0.1',
  });
  pkiKeys = new Set((await readSet(pki))!.keys());
  kubeconfigKeys = new Set(Object.keys(await renderKubeconfigs(pki, 'https://127.0.0.1:1', 'c')));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('control-plane component specs', () => {
  it("identify the process runtime's running processes as before the specs said what they read", () => {
    // Hashes of the specs the version before placements built (commit 44650e1): an operator
    // upgrade must not restart a component whose command line did not change.
    const before: Record<string, string> = {
      'tenant etcdSpec': '8f159f8e258639c591503489cd3b78a931dfaa04234477199fae055085822f2f',
      'tenant apiserverSpec': 'c138f06ca82c0590b5269caf47d32dbc7419e98964c8ea82e2d2caaeb20ba30a',
      // Changed on purpose (ADR 12, decision 19): no node-lifecycle controller in a tenant.
      'tenant controllerManagerSpec': 'e265b9db642cb4f462f3a7727218c7e8f39a3123c86affba137a06225fc3b477',
      'tenant schedulerSpec': '51f8aa42272f80241c1eab3565a093f7777a0267e522aff17b0de75100ac360b',
      'host etcdSpec': '156cd3d971dec86867b87ac902669fcb34c6bc572efae8fb8aa522b96579fec7',
      'host apiserverSpec': 'b267ecc52f46d1cf14f6bab301d894d652950fe66c3d0e915215fc845429548a',
      'host controllerManagerSpec': 'd70d2bc4b521f3a8eeac9c5dc6fd38fd1535a939b959ca3793a63ee2d3bbee43',
      'host schedulerSpec': 'cfefa4ff7aed8e414af2f08a6a90dba9869745fe84d0d0637626626f710a524a',
    };
    for (const [which, layout] of [
      ['tenant', tenant],
      ['host', host],
    ] as const)
      for (const [name, build] of Object.entries(builders)) {
        const spec = build(placeOnMachine(layout), bins);
        expect(spec.files?.length, name).toBeGreaterThan(0);
        expect(hashSpec(spec), `${which} ${name}`).toBe(before[`${which} ${name}`]);
      }
  });

  it("run a tenant's controller-manager without the node-lifecycle controller, the host's with it", () => {
    const off = '--controllers=*,-node-lifecycle-controller';
    expect(controllerManagerSpec(placeOnMachine(tenant), bins).args).toContain(off);
    expect(controllerManagerSpec(inPods, bins).args).toContain(off);
    expect(
      controllerManagerSpec(placeOnMachine(host), bins).args.some((a) => a.startsWith('--controllers')),
    ).toBe(false);
  });

  it('name only files they declare, each one a file the certificate set or the kubeconfigs have', () => {
    for (const placement of [placeOnMachine(tenant), inPods])
      for (const [name, build] of Object.entries(builders)) {
        const spec = build(placement, bins);
        const declared = new Set<string>();
        for (const set of spec.files ?? []) {
          for (const key of set.keys) {
            declared.add(join(set.path, key));
            if (set.source === 'pki') expect(pkiKeys, `${name}: ${key}`).toContain(key);
            if (set.source === 'kubeconfigs') expect(kubeconfigKeys, `${name}: ${key}`).toContain(key);
            if (set.source === 'audit-policy') expect(key).toBe('policy.yaml');
          }
        }
        // Every path an argument names is a declared file, or in a directory it writes.
        const paths = spec.args.flatMap((a) => a.match(/=(\/[^,]*)$/)?.[1] ?? []);
        expect(paths.length, name).toBeGreaterThan(0);
        for (const path of paths) {
          const written = (spec.writes ?? []).some((d) => path === d || path.startsWith(`${d}/`));
          expect(declared.has(path) || written, `${name}: ${path}`).toBe(true);
        }
      }
  });

  it('run the API server, controller-manager and scheduler as one process with their own flags (oneProcessSpec)', () => {
    const p = placeOnMachine(tenant);
    const one = oneProcessSpec(p, { ...bins, kubeControlPlane: '/t/kube-control-plane' });
    const parts = [
      apiserverSpec(p, bins),
      controllerManagerSpec(p, bins, true),
      schedulerSpec(p, bins, true),
    ];
    expect(one).toMatchObject({ owner: tenant.id, name: 'kube-apiserver', command: '/t/kube-control-plane' });
    expect(one.args).toEqual(parts.flatMap((s) => [s.name, ...s.args]));
    // The controller-manager and scheduler read kubeconfigs that name their certificate files
    // (a renewal restarts nothing); otherwise their flags are their own processes' flags.
    const kubeconfigs = '/state/tenants/t-a-1/kubeconfigs';
    for (const [own, who] of [
      [controllerManagerSpec(p, bins), 'controller-manager'],
      [schedulerSpec(p, bins), 'scheduler'],
    ] as const) {
      const inOne = one.args.slice(one.args.indexOf(own.name) + 1);
      for (const flag of ['kubeconfig', 'authentication-kubeconfig', 'authorization-kubeconfig']) {
        expect(own.args).toContain(`--${flag}=${kubeconfigs}/${who}.conf`);
        expect(inOne).toContain(`--${flag}=${kubeconfigs}/${who}.reloading.conf`);
      }
      const same = (args: readonly string[]) => args.filter((a) => !a.includes('kubeconfig'));
      expect(same(inOne.slice(0, own.args.length))).toEqual(same(own.args));
    }
    expect(one.probe).toEqual(parts[0]!.probe);
    // Go's default GC target while it starts, the lean one set by the process once started.
    const gc = { GOGC: '25', KOSMOS_VC_GOGC_SETTLED: '25', KOSMOS_VC_GOGC_SETTLE_AFTER: '30000ms' };
    expect(one.env).toEqual(gc);
    expect(one.ports).toEqual({
      https: ports.apiserver,
      controllerManager: ports.controllerManager,
      scheduler: ports.scheduler,
    });
    // Every file any of the three reads, each source once.
    const declared = (s: { files?: readonly { source: string; path: string; keys: readonly string[] }[] }) =>
      (s.files ?? []).flatMap((f) => f.keys.map((k) => `${f.source}:${join(f.path, k)}`));
    expect(new Set(declared(one))).toEqual(new Set(parts.flatMap(declared)));
    expect(new Set(one.files!.map((f) => f.source)).size).toBe(one.files!.length);
    // A new digest of what the two read once (a CA rotation's bundle) makes another process: the
    // runtime replaces the running one.
    const renewed = oneProcessSpec(p, { ...bins, kubeControlPlane: '/t/kube-control-plane' }, 'feed');
    expect(renewed.env).toEqual({ ...gc, KOSMOS_VC_CLIENTS: 'feed' });
    expect(hashSpec(renewed)).not.toBe(hashSpec(one));
  });

  it('name the certificate files in the one process client kubeconfigs, not their contents (reloadingKubeconfig)', () => {
    const p = placeOnMachine(tenant);
    for (const [who, leaf, user] of [
      ['controller-manager', 'controller-manager', 'system:kube-controller-manager'],
      ['scheduler', 'scheduler', 'system:kube-scheduler'],
    ] as const) {
      const conf = parse(reloadingKubeconfig(p, who)) as Record<string, unknown>;
      expect(conf.clusters).toEqual([
        {
          name: tenant.id,
          cluster: {
            server: 'https://127.0.0.1:21002',
            'certificate-authority': '/state/tenants/t-a-1/pki/ca.crt',
          },
        },
      ]);
      expect(conf.users).toEqual([
        {
          name: user,
          user: {
            'client-certificate': `/state/tenants/t-a-1/pki/${leaf}.crt`,
            'client-key': `/state/tenants/t-a-1/pki/${leaf}.key`,
          },
        },
      ]);
      expect(conf['current-context']).toBe(`${user}@${tenant.id}`);
    }
    // A relative state directory gives absolute paths: client-go would take them from the
    // kubeconfig's own directory.
    const relative = parse(
      reloadingKubeconfig(placeOnMachine({ ...tenant, dir: 'state/t' }), 'scheduler'),
    ) as {
      users: { user: Record<string, string> }[];
    };
    expect(relative.users[0]!.user['client-certificate']).toBe(
      join(process.cwd(), 'state/t/pki/scheduler.crt'),
    );
  });

  it('place everything where the placement says: no path of this machine, peers by their Service', () => {
    const specs = Object.values(builders).map((build) => build(inPods, bins));
    for (const spec of specs) {
      expect(spec.args.join(' ')).not.toContain('/state/');
      // The runtime probes with the operator's copy of the set.
      expect(spec.probe?.caFile).toMatch(/^\/state\/tenants\/t-a-1\/pki\//);
      expect(spec.probe?.url).toMatch(/^https:\/\/10\.244\.0\.9:/);
    }
    const [etcd, apiserver, controllerManager] = specs;
    expect(etcd!.args).toContain('--listen-client-urls=https://0.0.0.0:2379');
    expect(etcd!.args).toContain('--advertise-client-urls=https://etcd.kvc-ns.svc:2379');
    expect(etcd!.writes).toEqual(['/var/lib/etcd']);
    expect(etcd!.ports).toEqual({ client: 2379, peer: 2380 });
    expect(apiserver!.args).toContain('--etcd-servers=https://etcd.kvc-ns.svc:2379');
    expect(apiserver!.args).toContain('--advertise-address=$(POD_IP)');
    expect(apiserver!.writes).toEqual(['/var/log/kosmos-vc']);
    // The scheduler's pod never sees a CA key; the controller-manager's signs with one.
    const keysOf = (i: number) => specs[i]!.files!.flatMap((f) => f.keys);
    expect(keysOf(3).filter((k) => k.endsWith('.key'))).toEqual(['scheduler-serving.key']);
    expect(keysOf(3)).toContain('scheduler.conf');
    expect(controllerManager!.files!.find((f) => f.source === 'pki')!.keys).toContain('ca-signer.key');
  });

  it("place a tenant's control plane as pods of its host namespace (placeInHost)", () => {
    const p = placeInHost(tenantInPods);
    const [etcd, apiserver, controllerManager, scheduler] = Object.values(builders).map((b) =>
      b(p, IMAGE_PROGRAMS),
    );
    for (const spec of [etcd, apiserver, controllerManager, scheduler]) {
      expect(spec!.namespace).toBe('kvc-ns');
      expect(spec!.command).toMatch(/^\/usr\/local\/bin\//);
      // Probed at the pod's address as `localhost`, which every serving certificate names.
      expect(spec!.probe!.url).toMatch(/^https:\/\/localhost:/);
    }
    expect(etcd!.args).toContain('--listen-metrics-urls=http://0.0.0.0:2381');
    expect(etcd!.service).toEqual({ name: 'etcd', headless: true });
    expect(etcd!.health).toEqual({ scheme: 'HTTP', port: 2381, ready: '/readyz', live: '/livez' });
    expect(apiserver!.service).toEqual({ name: 'kosmos-apiserver', port: 443 });
    expect(apiserver!.args).toContain('--endpoint-reconciler-type=none');
    expect(p.apiserverURL).toBe('https://kosmos-apiserver.kvc-ns.svc:443');
    // Given its Service's address, the API server advertises it: the tenant's `kubernetes`
    // endpoint, on the API server's own port, which the Service carries as well.
    const advertised = apiserverSpec(placeInHost({ ...tenantInPods, address: '10.96.5.5' }), IMAGE_PROGRAMS);
    expect(advertised.args).toContain('--advertise-address=10.96.5.5');
    expect(advertised.args).toContain('--endpoint-reconciler-type=lease');
    expect(advertised.service).toEqual({ name: 'kosmos-apiserver', port: 443, direct: true });
    expect(scheduler!.health).toEqual({ scheme: 'HTTPS', port: 10259, ready: '/healthz', live: '/healthz' });
    // The process runtime's placement has none of it.
    const onMachine = etcdSpec(placeOnMachine(tenant), bins);
    expect(onMachine.namespace ?? onMachine.service ?? onMachine.health).toBeUndefined();
    expect(onMachine.args.join(' ')).not.toContain('listen-metrics');
  });

  it('render each component as a workload that mounts only its keys, etcd on a claim', () => {
    const p = placeInHost(tenantInPods);
    const images = {
      etcd: 'registry.k8s.io/etcd:3.6.16-0',
      'kube-apiserver': 'registry.k8s.io/kube-apiserver:v1.37.2',
      'kube-scheduler': 'registry.k8s.io/kube-scheduler:v1.37.2',
    };
    const etcd = renderWorkload(etcdSpec(p, IMAGE_PROGRAMS), 'kvc-ns', {
      images,
      etcdStorage: { storageClass: 'fast', size: '2Gi' },
    }) as V1StatefulSet;
    expect(etcd.kind).toBe('StatefulSet');
    expect(etcd.spec!.serviceName).toBe('etcd');
    const claim = etcd.spec!.volumeClaimTemplates![0]!;
    expect(claim.spec!.storageClassName).toBe('fast');
    expect(claim.spec!.resources!.requests!.storage).toBe('2Gi');
    const etcdPod = etcd.spec!.template.spec!;
    // The claim is etcd's data directory's parent: etcd makes the directory itself, mode 0700.
    expect(etcdPod.containers[0]!.volumeMounts).toContainEqual({ name: 'data', mountPath: '/var/lib/etcd' });
    expect(etcdPod.securityContext).toMatchObject({ runAsNonRoot: true, fsGroup: 65532 });
    expect(etcdPod.automountServiceAccountToken).toBe(false);
    const emptyDir = renderWorkload(etcdSpec(p, IMAGE_PROGRAMS), 'kvc-ns', {
      images,
      etcdStorage: { emptyDir: true },
    }) as V1StatefulSet;
    expect(emptyDir.spec!.volumeClaimTemplates).toBeUndefined();
    expect(emptyDir.spec!.template.spec!.volumes).toContainEqual({ name: 'writes-0', emptyDir: {} });

    const scheduler = renderWorkload(schedulerSpec(p, IMAGE_PROGRAMS), 'kvc-ns', { images });
    expect(scheduler).toMatchObject({ kind: 'Deployment', spec: { strategy: { type: 'Recreate' } } });
    const secrets = scheduler.spec!.template.spec!.volumes!.filter((v) => v.secret);
    const items = secrets.flatMap((v) => v.secret!.items!.map((i) => i.key));
    expect(items.filter((k) => k.endsWith('.key'))).toEqual(['scheduler-serving.key']);
    expect(secrets.map((v) => v.secret!.secretName).sort()).toEqual([
      'kosmos-vc-kubeconfigs',
      'kosmos-vc-pki',
    ]);
    const apiserver = renderWorkload(apiserverSpec(p, IMAGE_PROGRAMS), 'kvc-ns', { images });
    expect(apiserver).toMatchObject({ kind: 'Deployment', spec: { strategy: { type: 'RollingUpdate' } } });
    const etcdKeys = apiserver.spec!.template.spec!.volumes!.flatMap((v) => v.secret?.items ?? []);
    expect(etcdKeys).toContainEqual({ key: 'etcd__ca.crt', path: 'etcd/ca.crt' });

    // The hash names the whole workload: the same spec the same hash, another argument another.
    const hash = (w: { metadata?: { annotations?: Record<string, string> } }) =>
      w.metadata!.annotations!['kosmos.io/spec-hash'];
    const again = renderWorkload(schedulerSpec(p, IMAGE_PROGRAMS), 'kvc-ns', { images });
    expect(hash(again)).toBe(hash(scheduler));
    const changed = { ...schedulerSpec(p, IMAGE_PROGRAMS) };
    changed.args = [...changed.args, '--v=2'];
    expect(hash(renderWorkload(changed, 'kvc-ns', { images }))).not.toBe(hash(scheduler));

    // The tenant's own promotion taint, beside the runtime's tolerations.
    const tolerant = renderWorkload(
      { ...schedulerSpec(p, IMAGE_PROGRAMS), tolerates: { key: 'kosmos.io/promoted', value: 'abc' } },
      'kvc-ns',
      { images, tolerations: [{ key: 'dedicated', operator: 'Exists' }] },
    );
    expect(tolerant.spec!.template.spec!.tolerations).toEqual([
      { key: 'dedicated', operator: 'Exists' },
      { key: 'kosmos.io/promoted', value: 'abc', operator: 'Equal', effect: 'NoSchedule' },
    ]);
    expect(scheduler.spec!.template.spec!.tolerations).toBeUndefined();
    expect(() => renderWorkload(controllerManagerSpec(p, IMAGE_PROGRAMS), 'kvc-ns', { images })).toThrow(
      /no image configured for kube-controller-manager/,
    );
  });

  it("give a pod the host's credential only when its spec names a service account (clusterTree's)", () => {
    const tree = renderWorkload(
      {
        owner: 'tenant',
        name: 'clustertree',
        command: '/usr/local/bin/node',
        args: ['/app/dist/src/clustertree/main.js', '--config=/etc/kosmos-vc/clustertree/config.json'],
        files: [{ source: 'clustertree', path: '/etc/kosmos-vc/clustertree', keys: ['config.json'] }],
        ports: { status: 8080, kubelet: 10250 },
        serviceAccount: 'clustertree',
        health: { scheme: 'HTTP', port: 8080, ready: '/readyz', live: '/healthz' },
      },
      'kvc-ns',
      { images: { clustertree: 'localhost/kosmos-vc/operator:0123456789abcdef' } },
    );
    const pod = tree.spec!.template.spec!;
    expect(pod).toMatchObject({ serviceAccountName: 'clustertree', automountServiceAccountToken: true });
    expect(pod.volumes).toContainEqual({
      name: 'files-clustertree',
      secret: {
        secretName: 'kosmos-vc-clustertree',
        items: [{ key: 'config.json', path: 'config.json' }],
        defaultMode: 0o440,
      },
    });
    expect(pod.containers[0]!.resources!.requests).toEqual({ cpu: '50m', memory: '128Mi' });
    expect(pod.containers[0]!.readinessProbe!.httpGet).toMatchObject({ scheme: 'HTTP', port: 8080 });
    expect(tree).toMatchObject({ kind: 'Deployment', spec: { strategy: { type: 'Recreate' } } });
  });
});
