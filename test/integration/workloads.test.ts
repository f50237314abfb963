/**
 * A tenant is a real Kubernetes for its workloads (ADR 7), on the embedded host's real node:
 * real containers, Services that carry traffic (the design's E2E 2), kubectl logs / exec /
 * attach / port-forward / cp through clusterTree's kubelet endpoint, in-cluster access to the
 * tenant's own API, tenant DNS, and the node's own restarts. All with the tenant's kubeconfig and
 * real kubectl, as a user would.
 */
import { DiscoveryV1Api } from '@kubernetes/client-node';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { VirtualCluster } from '../../src/api/virtualCluster.js';
import { hostName, hostNamespace } from '../../src/clustertree/naming.js';
import { resolveBinaries } from '../../src/runtime/binaries.js';
import type { Operator } from '../../src/worker/operator.js';
import {
  createNamespace,
  createVirtualCluster,
  deleteVirtualCluster,
  eventually,
  host,
  kubectl,
  newStateDir,
  refOf,
  run,
  tenantCore,
  tenantKubeconfig,
  testOperator,
  waitForGone,
} from '../support/harness.js';
import {
  fetchFromClient as fetchFrom,
  runClientAndWeb,
  runningPod as podRunning,
  serviceCarriesTraffic,
  testImages,
  type TestImages,
} from '../support/workloads.js';

const realNode = inject('realNode');
const nodeAddress = inject('nodeAddress');

let operator: Operator;
let namespace: string;
let stateDir: string;
let kubeconfig: string;
let vc: VirtualCluster;
let images: TestImages;

beforeAll(async () => {
  // A machine that should have a real node but has none fails here, with the reason in the log.
  if (!realNode)
    throw new Error('no real node on this machine (see the global setup log): cannot test workloads');
  images = await testImages();
  stateDir = await newStateDir();
  namespace = await createNamespace('workloads');
  operator = await testOperator({ stateDir, taskQueue: `workloads-${randomUUID()}`, namespace });
  // Exposed on a node port: every kubectl call here goes through the host's Service and the node's
  // proxy to the API server process.
  await createVirtualCluster(namespace, 'real', {
    promoteResources: { nodes: [realNode] },
    apiServer: { expose: { type: 'NodePort' } },
  });
  vc = await eventually('tenant real Ready', async () => {
    const v = await host().getVirtualCluster({ namespace, name: 'real' });
    if (v?.status?.phase === 'Failed') throw new Error(v.status.message);
    return v?.status?.phase === 'Ready' ? v : undefined;
  });
  kubeconfig = await tenantKubeconfig(stateDir, vc);
}, 240_000);

afterAll(async () => {
  // Gives the real node back to the tests after this one, whatever failed here (a tenant that
  // never became Ready included).
  if (namespace && (await host().getVirtualCluster({ namespace, name: 'real' })))
    await deleteVirtualCluster(namespace, 'real').catch(() => undefined);
  if (namespace) await waitForGone(namespace, 'real', 180_000).catch(() => undefined);
  await operator?.stop({ stopTenants: true });
}, 240_000);

const k = (...args: string[]) => kubectl(kubeconfig, ...args);

const runningPod = (name: string, ns = 'default') => podRunning(kubeconfig, name, ns);
const fetchFromClient = (url: string) => fetchFrom(kubeconfig, url);

describe('workloads on the real node', () => {
  it('runs real containers: a client pod and a Deployment of HTTP servers', async () => {
    const client = await runClientAndWeb(kubeconfig, images);
    // Its events, as in any cluster: placed by the tenant scheduler, started by the kubelet of the
    // node (the host kubelet's events, about the tenant pod, on the tenant's node).
    const events = await eventually('the scheduler and kubelet events of the client pod', async () => {
      const list = (
        await tenantCore(kubeconfig).listNamespacedEvent({
          namespace: 'default',
          fieldSelector: 'involvedObject.name=client',
        })
      ).items;
      const reasons = new Set(list.map((e) => e.reason));
      return ['Scheduled', 'Pulled', 'Created', 'Started'].every((r) => reasons.has(r)) ? list : undefined;
    });
    const started = events.find((e) => e.reason === 'Started')!;
    expect(started.source).toEqual({ component: 'kubelet', host: realNode });
    expect(started.involvedObject).toMatchObject({ name: 'client', uid: client.metadata!.uid });
    expect(started.involvedObject.fieldPath).toBe('spec.containers{client}');
    expect(await k('describe', 'pod', 'client')).toMatch(
      /Started\s+\S+\s+kubelet\s+spec\.containers\{client\}: \S/,
    );
  });

  it('E2E 2: a Service answers by short name, FQDN and ClusterIP; scaling and deletion show', async () => {
    await serviceCarriesTraffic(kubeconfig, hostNamespace(refOf(vc)));
  });

  it('the API server on a node port: the kubeconfig names the node address and that port', async () => {
    const svc = await host().core.readNamespacedService({
      name: 'kosmos-apiserver',
      namespace: hostNamespace(refOf(vc)),
    });
    expect(svc.spec?.type).toBe('NodePort');
    const server = `https://${nodeAddress}:${svc.spec!.ports![0]!.nodePort}`;
    expect((await k('config', 'view', '-o', 'jsonpath={.clusters[0].cluster.server}')).trim()).toBe(server);
    expect(vc.status?.apiServerEndpoint).toBe(server);
    expect(await k('get', '--raw', '/readyz')).toBe('ok');
  });

  it('a NodePort Service answers on the node address from the machine', async () => {
    await k('expose', 'deployment', 'web', '--name=web-np', '--type=NodePort', '--port=80');
    const port = await eventually('web-np to take its host node port', async () => {
      const s = await tenantCore(kubeconfig).readNamespacedService({ name: 'web-np', namespace: 'default' });
      const np = s.spec?.ports?.[0]?.nodePort;
      const hosts = (await host().core.listNamespacedService({ namespace: hostNamespace(refOf(vc)) })).items;
      return np && hosts.some((h) => h.spec?.ports?.[0]?.nodePort === np) ? np : undefined;
    });
    const reply = await eventually('the node port to answer', async () => {
      const res = await fetch(`http://${nodeAddress}:${port}/`, { signal: AbortSignal.timeout(3000) }).catch(
        () => undefined,
      );
      return res?.ok ? (await res.text()).trim() : undefined;
    });
    expect(reply).toMatch(/^web-/);
  });
});

describe('a Service without a selector', () => {
  it('carries traffic to the endpoints the tenant gives it; addresses outside the host are left out', async () => {
    const [pod] = (
      await tenantCore(kubeconfig).listNamespacedPod({ namespace: 'default', labelSelector: 'app=web' })
    ).items.filter((p) => p.status?.phase === 'Running' && !p.metadata?.deletionTimestamp);
    const manifest = join(stateDir, 'manual.json');
    await writeFile(
      manifest,
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'List',
        items: [
          {
            apiVersion: 'v1',
            kind: 'Service',
            metadata: { name: 'manual' },
            spec: { ports: [{ port: 80, protocol: 'TCP' }] },
          },
          {
            apiVersion: 'discovery.k8s.io/v1',
            kind: 'EndpointSlice',
            metadata: { name: 'manual-1', labels: { 'kubernetes.io/service-name': 'manual' } },
            addressType: 'IPv4',
            ports: [{ port: 80, protocol: 'TCP' }],
            // A pod of the tenant, and an address that is no pod of this host (TEST-NET-1).
            endpoints: [{ addresses: [pod!.status!.podIP!] }, { addresses: ['192.0.2.99'] }],
          },
        ],
      }),
    );
    await k('apply', '-f', manifest);
    const reply = await eventually('the selector-less Service to answer', async () => {
      const r = await fetchFromClient('http://manual');
      return r.startsWith('error') ? undefined : r;
    });
    expect(reply).toBe(pod!.metadata!.name);
    const hostSlices = (
      await host()
        .kubeConfig.makeApiClient(DiscoveryV1Api)
        .listNamespacedEndpointSlice({
          namespace: hostNamespace(refOf(vc)),
          labelSelector: `kubernetes.io/service-name=${hostName('default', 'manual')}`,
        })
    ).items;
    const addresses = hostSlices.flatMap((sl) => (sl.endpoints ?? []).flatMap((e) => e.addresses));
    expect(addresses).toEqual([pod!.status!.podIP]);
  });
});

describe('kubectl against tenant pods', () => {
  it('logs, logs -f with a line written after the call, and --previous', async () => {
    await k(
      'run',
      'ticker',
      `--image=${images.busybox}`,
      '--restart=Never',
      '--command',
      '--',
      'sh',
      '-c',
      'i=0; while true; do echo tick $i; i=$((i+1)); sleep 1; done',
    );
    await runningPod('ticker');
    expect(
      await eventually('a first line', async () =>
        (await k('logs', 'ticker')).includes('tick 0') ? true : undefined,
      ),
    ).toBe(true);
    const { kubectl: bin } = await resolveBinaries();
    const follow = spawn(bin, ['--kubeconfig', kubeconfig, 'logs', '-f', '--tail=1', 'ticker']);
    let out = '';
    follow.stdout.on('data', (d: Buffer) => (out += d.toString()));
    try {
      const first = await eventually('logs -f to print', () => /tick (\d+)/.exec(out)?.[1], 30_000);
      await eventually(
        'logs -f to print a later line',
        () => out.includes(`tick ${Number(first) + 2}`),
        30_000,
      );
    } finally {
      follow.kill();
    }

    await k(
      'run',
      'crasher',
      `--image=${images.busybox}`,
      '--restart=Always',
      '--command',
      '--',
      'sh',
      '-c',
      'echo run at $(date +%s%N); sleep 2; exit 1',
    );
    await eventually('crasher restarted', async () => {
      const p = await tenantCore(kubeconfig).readNamespacedPod({ name: 'crasher', namespace: 'default' });
      return (p.status?.containerStatuses?.[0]?.restartCount ?? 0) >= 1 || undefined;
    });
    const previous = await k('logs', 'crasher', '--previous');
    expect(previous).toMatch(/^run at \d+/);
  });

  it('exec with stdin and the exit code; attach; cp', async () => {
    const { kubectl: bin } = await resolveBinaries();
    const exec = spawn(bin, [
      '--kubeconfig',
      kubeconfig,
      'exec',
      '-i',
      'client',
      '--',
      'sh',
      '-c',
      'cat; exit 3',
    ]);
    let out = '';
    exec.stdout.on('data', (d: Buffer) => (out += d.toString()));
    exec.stdin.end('hello through clusterTree\n');
    const code = await new Promise<number | null>((r) => exec.on('exit', r));
    expect(out).toBe('hello through clusterTree\n');
    expect(code).toBe(3);

    // `exec -it` as at a terminal (script gives kubectl a pseudo-terminal): the shell has a tty.
    const { stdout: tty } = await run(
      'script',
      ['-qec', `${bin} --kubeconfig ${kubeconfig} exec -it client -- sh -c 'tty; exit 0'`, '/dev/null'],
      { timeout: 30_000 },
    );
    expect(tty).toMatch(/\/dev\/pts\/\d+/);

    const attach = spawn(bin, ['--kubeconfig', kubeconfig, 'attach', 'ticker']);
    let attached = '';
    attach.stdout.on('data', (d: Buffer) => (attached += d.toString()));
    try {
      await eventually('attach to show output', () => /tick \d+/.test(attached), 30_000);
    } finally {
      attach.kill();
    }

    const local = join(stateDir, 'cp-source.txt');
    await writeFile(local, `copied ${randomUUID()}\n`);
    await k('cp', local, 'default/client:/tmp/copied.txt');
    expect(await k('exec', 'client', '--', 'cat', '/tmp/copied.txt')).toBe(await readFile(local, 'utf8'));
    const back = join(stateDir, 'cp-back.txt');
    await k('cp', 'default/client:/tmp/copied.txt', back);
    expect(await readFile(back, 'utf8')).toBe(await readFile(local, 'utf8'));
  });

  it('port-forward reaches a pod', async () => {
    const pod = (
      await tenantCore(kubeconfig).listNamespacedPod({ namespace: 'default', labelSelector: 'app=web' })
    ).items[0]!;
    const { kubectl: bin } = await resolveBinaries();
    const pf = spawn(bin, ['--kubeconfig', kubeconfig, 'port-forward', `pod/${pod.metadata!.name!}`, ':80']);
    let out = '';
    pf.stdout.on('data', (d: Buffer) => (out += d.toString()));
    try {
      const port = await eventually(
        'port-forward to listen',
        () => /127\.0\.0\.1:(\d+) ->/.exec(out)?.[1],
        30_000,
      );
      const res = await fetch(`http://127.0.0.1:${port}/`);
      expect((await res.text()).trim()).toBe(pod.metadata!.name);
    } finally {
      pf.kill();
    }
  });
});

describe('inside a tenant pod', () => {
  it('the in-cluster configuration reaches the tenant API: a client lists the tenant pods, nothing of the host', async () => {
    await k(
      'create',
      'clusterrolebinding',
      'default-view',
      '--clusterrole=view',
      '--serviceaccount=default:default',
    );
    await k(
      'run',
      'lister',
      `--image=${images.kubectl}`,
      '--restart=Never',
      '--command',
      '--',
      'sleep',
      '3600',
    );
    await runningPod('lister');
    const listed = await eventually('an in-cluster list of pods', async () => {
      const out = await k('exec', 'lister', '--', 'kubectl', 'get', 'pods', '-A', '-o', 'name');
      return out.includes('pod/lister') ? out : undefined;
    });
    expect(listed).toContain('pod/client');
    // The host's pods (their host names carry "-x-") are nowhere in the tenant's answer.
    expect(listed).not.toContain('-x-');
    const env = await k('exec', 'lister', '--', 'env');
    const tenantApiIP = (
      await tenantCore(kubeconfig).readNamespacedService({ name: 'kubernetes', namespace: 'default' })
    ).spec!.clusterIP!;
    expect(env).toContain(`KUBERNETES_SERVICE_HOST=${tenantApiIP}\n`);
    expect(env).toContain('KUBERNETES_SERVICE_PORT=443\n');
    // Service links are the tenant's (web-np lives in default), never the host's.
    expect(env).toContain('WEB_NP_SERVICE_HOST=');
    expect(env).not.toMatch(/KOSMOS_APISERVER|KUBE_DNS_SERVICE/);
    const hostApiIP = (await host().core.readNamespacedService({ name: 'kubernetes', namespace: 'default' }))
      .spec!.clusterIP!;
    expect(env).not.toContain(`=${hostApiIP}\n`);
  });

  it('DNS: Services, headless pod records, short names; not the host or another tenant', async () => {
    await k('create', 'service', 'clusterip', 'hs', '--clusterip=None', '--tcp=80:80');
    await writeFile(
      join(stateDir, 'named.yaml'),
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: { name: 'named', labels: { app: 'hs' } },
        spec: {
          hostname: 'h1',
          subdomain: 'hs',
          containers: [{ name: 'c', image: images.busybox, command: ['sleep', '3600'] }],
        },
      }),
    );
    await k('apply', '-f', join(stateDir, 'named.yaml'));
    const named = await runningPod('named');
    // Its own name in /etc/hosts is the tenant's FQDN, as the kubelet of any cluster writes it, and
    // the tenant sees only its own init containers (none).
    const hosts = await k('exec', 'named', '--', 'cat', '/etc/hosts');
    expect(hosts).toMatch(
      new RegExp(
        `^${named.status!.podIP!.replace(/\./g, '\\.')}\\s+h1\\.hs\\.default\\.svc\\.cluster\\.local\\s+h1$`,
        'm',
      ),
    );
    expect(hosts).not.toContain(hostNamespace(refOf(vc)));
    expect(named.status!.initContainerStatuses ?? []).toEqual([]);
    expect(await k('exec', 'named', '--', 'hostname')).toBe('h1\n');
    const lookup = async (name: string) =>
      k('exec', 'client', '--', 'nslookup', name).catch(
        (e: { stdout?: string; stderr?: string }) => `failed: ${e.stdout ?? ''}${e.stderr ?? ''}`,
      );
    const webNp = (
      await tenantCore(kubeconfig).readNamespacedService({ name: 'web-np', namespace: 'default' })
    ).spec!.clusterIP!;
    expect(
      await eventually('web-np to resolve', async () =>
        (await lookup('web-np')).includes(webNp) ? true : undefined,
      ),
    ).toBe(true);
    expect(await lookup('web-np.default.svc.cluster.local')).toContain(webNp);
    expect(
      await eventually('the headless pod record', async () =>
        (await lookup('h1.hs.default.svc.cluster.local')).includes(named.status!.podIP!) ? true : undefined,
      ),
    ).toBe(true);
    // busybox's nslookup applies the search path to names without dots only.
    expect(await lookup('kubernetes')).toContain(
      (await tenantCore(kubeconfig).readNamespacedService({ name: 'kubernetes', namespace: 'default' })).spec!
        .clusterIP!,
    );
    await k('create', 'service', 'externalname', 'ext', '--external-name=web-np.default.svc.cluster.local');
    expect(
      await eventually('the ExternalName to resolve through its target', async () =>
        (await lookup('ext')).includes(webNp) ? true : undefined,
      ),
    ).toBe(true);
    // The host's own Service names and another tenant's do not resolve here.
    const hostNs = hostNamespace(refOf(vc));
    expect(await lookup(`kosmos-apiserver.${hostNs}.svc.cluster.local`)).toMatch(
      /failed|NXDOMAIN|can't find/,
    );
  });
});

describe('isolation from another tenant and the host', () => {
  it("a tenant pod cannot resolve another tenant's Services nor read its API or the host's", async () => {
    await createVirtualCluster(namespace, 'other', {});
    const other = await eventually('tenant other Ready', async () => {
      const v = await host().getVirtualCluster({ namespace, name: 'other' });
      if (v?.status?.phase === 'Failed') throw new Error(v.status.message);
      return v?.status?.phase === 'Ready' ? v : undefined;
    });
    const otherKc = await tenantKubeconfig(stateDir, other);
    await kubectl(otherKc, 'create', 'service', 'clusterip', 'private-svc', '--tcp=80:80');
    const otherIP = await eventually("the other tenant's Service to take its host ClusterIP", async () => {
      const ip = (
        await tenantCore(otherKc).readNamespacedService({ name: 'private-svc', namespace: 'default' })
      ).spec?.clusterIP;
      const hosts = (await host().core.listNamespacedService({ namespace: hostNamespace(refOf(other)) }))
        .items;
      return ip && hosts.some((h) => h.spec?.clusterIP === ip) ? ip : undefined;
    });
    const own = await k('exec', 'client', '--', 'nslookup', 'private-svc.default.svc.cluster.local').catch(
      (e: { stdout?: string }) => `failed: ${e.stdout ?? ''}`,
    );
    expect(own).not.toContain(otherIP);
    expect(own).toMatch(/NXDOMAIN|can't find|failed/);
    // The other tenant's API server, at the address its own pods use: this tenant's token is refused.
    const otherApi = (
      await host().core.readNamespacedService({
        name: 'kosmos-apiserver',
        namespace: hostNamespace(refOf(other)),
      })
    ).spec!.clusterIP!;
    const refused = await k(
      'exec',
      'lister',
      '--',
      'kubectl',
      `--server=https://${otherApi}:443`,
      '--insecure-skip-tls-verify',
      `--token=${(await k('exec', 'lister', '--', 'cat', '/var/run/secrets/kubernetes.io/serviceaccount/token')).trim()}`,
      'get',
      'pods',
    ).catch((e: { stderr?: string }) => e.stderr ?? 'failed');
    expect(refused).toMatch(/Unauthorized|must be logged in/);
    const connects = async (ip: string, port: number) =>
      k(
        'exec',
        'client',
        '--',
        'sh',
        '-c',
        `nc -w 3 ${ip} ${port} </dev/null && echo CONNECTED || echo REFUSED`,
      );
    const tenantApi = (
      await tenantCore(kubeconfig).readNamespacedService({ name: 'kubernetes', namespace: 'default' })
    ).spec!.clusterIP!;
    expect(await connects(tenantApi, 443)).toContain('CONNECTED');
    // The host's API is reached from host pods as in any cluster (clusterTree's and the operator's
    // pods need it, ADR 14), through its Service and on the node's address; it refuses a tenant
    // pod's token like any stranger's (the isolation is its authentication, ADR 7).
    const hostApi = (await host().core.readNamespacedService({ name: 'kubernetes', namespace: 'default' }))
      .spec!.clusterIP!;
    const hostPort = Number(new URL(host().kubeConfig.getCurrentCluster()!.server).port);
    const token = (
      await k('exec', 'lister', '--', 'cat', '/var/run/secrets/kubernetes.io/serviceaccount/token')
    ).trim();
    for (const server of [`https://${hostApi}:443`, `https://${nodeAddress}:${hostPort}`]) {
      const answer = await k(
        'exec',
        'lister',
        '--',
        'kubectl',
        `--server=${server}`,
        '--insecure-skip-tls-verify',
        `--token=${token}`,
        'get',
        'namespaces',
      ).catch((e: { stderr?: string }) => e.stderr ?? 'failed');
      expect(answer, server).toMatch(/Unauthorized|must be logged in/);
    }
    // Nothing of the host's credentials in the pod's files or environment.
    const files = await k('exec', 'lister', '--', 'sh', '-c', 'ls -R /var/run/secrets; env');
    expect(files).not.toMatch(/clustertree-token|HOST_KUBECONFIG/);
    await host().custom.deleteNamespacedCustomObject({
      group: 'kosmos.io',
      version: 'v1alpha1',
      plural: 'virtualclusters',
      namespace,
      name: 'other',
    });
  });
});

describe('the node restarts under running pods', () => {
  async function restart(component: 'kubelet' | 'containerd'): Promise<void> {
    const recordFile = join(inject('stateRoot'), 'embedded', `node-${realNode}`, `${component}.json`);
    const before = (JSON.parse(await readFile(recordFile, 'utf8')) as { pid: number }).pid;
    process.kill(before, 'SIGKILL');
    await eventually(`${component} restarted by its supervisor`, async () => {
      const now = (JSON.parse(await readFile(recordFile, 'utf8')) as { pid: number }).pid;
      return now !== before || undefined;
    });
  }

  it('kubelet and containerd restarted: pods keep running, the tenant view stays right', async () => {
    const before = await runningPod('client');
    const startedAt = before.status!.containerStatuses![0]!.state!.running!.startedAt;
    await restart('kubelet');
    await restart('containerd');
    // Wait for the node to report again, then the same container still runs.
    await eventually(
      'client still answering exec',
      async () => (await k('exec', 'client', '--', 'echo', 'alive')).trim() === 'alive' || undefined,
    );
    const after = await runningPod('client');
    expect(after.status!.containerStatuses![0]!.restartCount).toBe(0);
    expect(after.status!.containerStatuses![0]!.state!.running!.startedAt).toEqual(startedAt);
    const r = await eventually('the NodePort Service answering again', async () => {
      const res = await fetch(
        `http://${nodeAddress}:${after.spec ? (await tenantCore(kubeconfig).readNamespacedService({ name: 'web-np', namespace: 'default' })).spec!.ports![0]!.nodePort! : 0}/`,
        { signal: AbortSignal.timeout(3000) },
      ).catch(() => undefined);
      return res?.ok || undefined;
    });
    expect(r).toBe(true);
  });
});

describe('bad input', () => {
  it('a missing image shows ErrImagePull/ImagePullBackOff in the tenant, with the reason', async () => {
    // A registry on a loopback port nothing listens on: the pull fails here, nothing leaves the machine.
    await k('run', 'noimage', '--image=localhost:1/kosmos-vc/nothing:1.0', '--restart=Never');
    const waiting = await eventually('the pull failure in the tenant', async () => {
      const p = await tenantCore(kubeconfig).readNamespacedPod({ name: 'noimage', namespace: 'default' });
      const w = p.status?.containerStatuses?.[0]?.state?.waiting;
      return w && ['ErrImagePull', 'ImagePullBackOff'].includes(w.reason ?? '') ? w : undefined;
    });
    expect(waiting.message ?? '').not.toBe('');
    // The kubelet's warning says why, as `kubectl describe` shows it.
    await eventually('the pull failure as a Warning event', async () =>
      (
        await tenantCore(kubeconfig).listNamespacedEvent({
          namespace: 'default',
          fieldSelector: 'involvedObject.name=noimage,type=Warning',
        })
      ).items.some((e) => e.reason === 'Failed' && e.message?.includes('localhost:1/kosmos-vc/nothing')),
    );
  });

  it('host port and host network are refused as before', async () => {
    await k(
      'run',
      'hostnet',
      `--image=${images.busybox}`,
      '--restart=Never',
      '--overrides={"spec":{"hostNetwork":true}}',
      '--command',
      '--',
      'sleep',
      '60',
    );
    const p = await eventually('hostnet refused', async () => {
      const pod = await tenantCore(kubeconfig).readNamespacedPod({ name: 'hostnet', namespace: 'default' });
      return pod.status?.phase === 'Failed' ? pod : undefined;
    });
    expect(p.status?.reason).toBe('HostAccessForbidden');
  });

  it('a 10 MB log line and an exec whose pod ends mid-stream: clear results, clusterTree stays up', async () => {
    await k(
      'run',
      'bigline',
      `--image=${images.busybox}`,
      '--restart=Never',
      '--command',
      '--',
      'sh',
      '-c',
      "head -c 10485760 /dev/zero | tr '\\0' x; echo; sleep 3600",
    );
    await runningPod('bigline');
    const { kubectl: bin } = await resolveBinaries();
    const { stdout } = await eventually('the big line', async () => {
      const r = await run(bin, ['--kubeconfig', kubeconfig, 'logs', 'bigline'], {
        maxBuffer: 64 * 1024 * 1024,
      });
      return r.stdout.length >= 10 * 1024 * 1024 ? r : undefined;
    });
    expect(stdout.trim()).toMatch(/^x+$/);

    await k(
      'run',
      'shortlived',
      `--image=${images.busybox}`,
      '--restart=Never',
      '--command',
      '--',
      'sleep',
      '3600',
    );
    await runningPod('shortlived');
    const exec = spawn(bin, [
      '--kubeconfig',
      kubeconfig,
      'exec',
      'shortlived',
      '--',
      'sh',
      '-c',
      'echo started; sleep 60',
    ]);
    let out = '';
    exec.stdout.on('data', (d: Buffer) => (out += d.toString()));
    await eventually('exec started', () => out.includes('started'), 30_000);
    const exited = new Promise<number | null>((r) => exec.on('exit', r));
    await k('delete', 'pod', 'shortlived', '--grace-period=1', '--wait=false');
    expect(await exited).not.toBe(0);
    // clusterTree still serves: another exec works.
    expect((await k('exec', 'client', '--', 'echo', 'still here')).trim()).toBe('still here');
  });
});
