/**
 * The kosmos-vc command line, parsed by commander: every command has `--help`; unknown commands
 * and options, missing arguments and bad values are refused with a usage line (exit 2). What each
 * command does is passed in, so the parsing is tested without starting anything.
 */
import { Command, CommanderError } from 'commander';
import { type ResizeOptions, type ResizeRequest, UsageError, resizeRequest } from './resize.js';
import type { RotateCARequest } from './rotateCA.js';
import type { BackupRequest, RestoreRequest } from './backup.js';

export interface TargetOptions {
  namespace?: string;
  kubeconfig?: string;
}

export interface Handlers {
  up(): Promise<void>;
  worker(): Promise<void>;
  resize(r: ResizeRequest): Promise<void>;
  get(o: TargetOptions & { target?: string; allNamespaces?: boolean }): Promise<void>;
  describe(o: TargetOptions & { target: string }): Promise<void>;
  kubeconfig(o: TargetOptions & { target: string }): Promise<void>;
  rotateCA(o: RotateCARequest): Promise<void>;
  backup(o: BackupRequest): Promise<void>;
  restore(o: RestoreRequest): Promise<void>;
}

export interface ProgramIO {
  out?: (s: string) => void;
  err?: (s: string) => void;
  /** Throw CommanderError instead of exiting (tests, parseResizeArgs). */
  exitOverride?: boolean;
}

const TARGET = '[<namespace>/]<name> of the VirtualCluster';

const repeat = (value: string, previous: string[] = []): string[] => [...previous, value];

function withTargetOptions(c: Command): Command {
  return c
    .option('-n, --namespace <namespace>', 'namespace of the VirtualCluster (default: "default")')
    .option(
      '--kubeconfig <file>',
      'kubeconfig of the host cluster (default: $KUBECONFIG, as kubectl reads it)',
    );
}

export function buildProgram(h: Handlers, io: ProgramIO = {}): Command {
  const program = new Command('kosmos-vc')
    .description(
      'Split one Kubernetes cluster into many real, isolated tenant clusters (VirtualCluster, kosmos.io/v1alpha1).',
    )
    .showHelpAfterError('(add --help for usage)');
  const all: Command[] = [program];
  const sub = (name: string, description: string): Command => {
    const c = program.command(name).description(description);
    all.push(c);
    return c;
  };

  sub(
    'up',
    'run the operator (worker and watcher); with no KUBECONFIG / TEMPORAL_ADDRESS it first starts the embedded host cluster and a Temporal dev server',
  )
    .addHelpText(
      'after',
      '\nSettings come from the environment (KUBECONFIG, TEMPORAL_ADDRESS, KOSMOS_VC_*): see the README.',
    )
    .action(() => h.up());
  sub(
    'worker',
    'run only a worker (activities and workflows) against KUBECONFIG and TEMPORAL_ADDRESS; scale out by running more',
  ).action(() => h.worker());
  sub('resize', "change a VirtualCluster's promoted nodes, CPU or memory, and follow it until it is applied")
    .argument('<target>', TARGET)
    .option('--nodes <a,b>', 'exactly these host nodes (comma-separated)')
    .option('--add-node <node>', 'promote one more host node (repeatable)', repeat)
    .option('--remove-node <node>', 'hand a host node back (repeatable)', repeat)
    .option('--cpu <quantity>', 'promoted CPU slice (4, 500m)')
    .option('--memory <quantity>', 'promoted memory slice (8Gi)')
    .option('--no-resources', 'promote no CPU/memory slice')
    .option('--timeout <seconds>', 'how long to follow the change', '300')
    .addHelpText(
      'after',
      '\nExit codes: 0 applied, 3 applied with nodes still pending, 1 failed or timed out, 2 usage.',
    )
    .action((target: string, o: ResizeOptions) => h.resize(resizeRequest(target, o)));
  withTargetOptions(
    sub(
      'get',
      'list VirtualClusters (or show one): phase, promoted nodes and resources, endpoint, age',
    ).argument('[target]', TARGET),
  )
    .option('-A, --all-namespaces', 'list the VirtualClusters of every namespace')
    .action((target: string | undefined, o: TargetOptions & { allNamespaces?: boolean }) =>
      h.get({ ...o, ...(target ? { target } : {}) }),
    );
  withTargetOptions(
    sub(
      'describe',
      'show one VirtualCluster in full: spec, status, conditions, host namespace, workflow',
    ).argument('<target>', TARGET),
  ).action((target: string, o: TargetOptions) => h.describe({ ...o, target }));
  withTargetOptions(
    sub(
      'kubeconfig',
      "print a VirtualCluster's admin kubeconfig (kosmos-vc kubeconfig tenant1 > t.conf)",
    ).argument('<target>', TARGET),
  ).action((target: string, o: TargetOptions) => h.kubeconfig({ ...o, target }));
  withTargetOptions(
    sub(
      'rotate-ca',
      "rotate a VirtualCluster's cluster CA: old and new kubeconfigs both work for spec.certificates.caOverlap (default 24h), then the old CA is retired",
    ).argument('<target>', TARGET),
  )
    .option('--timeout <seconds>', 'how long to follow the rotation (0: only request it)', '300')
    .action((target: string, o: TargetOptions & { timeout?: string }) => h.rotateCA({ ...o, target }));
  withTargetOptions(
    sub(
      'backup',
      "back a VirtualCluster up (etcd snapshot, CAs, service-account key) into the operator's backup directory",
    ).argument('<target>', TARGET),
  )
    .option('--to <file>', 'also copy the backup to this file')
    .option('--timeout <seconds>', 'how long to wait for it', '300')
    .action((target: string, o: TargetOptions & { to?: string; timeout?: string }) =>
      h.backup({ ...o, target }),
    );
  withTargetOptions(
    sub(
      'restore',
      'create a new VirtualCluster from a backup file, and follow it until it is Ready',
    ).argument('<name>', '[<namespace>/]<name> of the new VirtualCluster'),
  )
    .requiredOption('--from <file>', 'the backup (kosmos-vc backup --to wrote it)')
    .option('--timeout <seconds>', 'how long to follow it', '300')
    .action((name: string, o: TargetOptions & { from: string; timeout?: string }) =>
      h.restore({ ...o, name }),
    );

  for (const c of all) {
    c.configureOutput({ ...(io.out ? { writeOut: io.out } : {}), ...(io.err ? { writeErr: io.err } : {}) });
    if (io.exitOverride) c.exitOverride();
  }
  return program;
}

/** The resize request the words after `kosmos-vc resize` ask for; UsageError when they are wrong. */
export function parseResizeArgs(argv: string[]): ResizeRequest {
  let request: ResizeRequest | undefined;
  const idle = () => Promise.resolve();
  const program = buildProgram(
    {
      up: idle,
      worker: idle,
      get: idle,
      describe: idle,
      kubeconfig: idle,
      rotateCA: idle,
      backup: idle,
      restore: idle,
      resize: (r) => {
        request = r;
        return idle();
      },
    },
    { exitOverride: true, out: () => undefined, err: () => undefined },
  );
  try {
    program.parse(['resize', ...argv], { from: 'user' });
  } catch (e) {
    if (e instanceof CommanderError) throw new UsageError(e.message);
    throw e;
  }
  if (!request) throw new UsageError('no resize request'); // --help
  return request;
}
