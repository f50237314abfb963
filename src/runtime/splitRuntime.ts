/**
 * Two runtimes behind one interface (ADR 14): a spec for pods (it names a namespace) goes to the
 * kubernetes runtime, every other to the process runtime, which keeps clusterTree and CoreDNS
 * and the control planes of tenants allocated before. A component is asked of the runtime that
 * has it; stop and remove go to both (each is a no-op where there is nothing).
 */
import type { ComponentName, ComponentSpec, ComponentStatus, ControlPlaneRuntime } from './types.js';

export class SplitRuntime implements ControlPlaneRuntime {
  constructor(
    private readonly pods: ControlPlaneRuntime,
    private readonly processes: ControlPlaneRuntime,
  ) {}

  /** The process runtime's own records are local and cheap: asked first. */
  private async holder(owner: string, name: ComponentName): Promise<ControlPlaneRuntime> {
    const local = await this.processes.list(owner);
    return local.some((c) => c.name === name) ? this.processes : this.pods;
  }

  ensure(spec: ComponentSpec): Promise<ComponentStatus> {
    return (spec.namespace ? this.pods : this.processes).ensure(spec);
  }

  async waitReady(
    owner: string,
    name: ComponentName,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<void> {
    return (await this.holder(owner, name)).waitReady(owner, name, timeoutMs, signal);
  }

  async stop(owner: string, name: ComponentName): Promise<void> {
    await this.processes.stop(owner, name);
    await this.pods.stop(owner, name);
  }

  async remove(owner: string): Promise<void> {
    await this.processes.remove(owner);
    await this.pods.remove(owner);
  }

  async list(owner?: string): Promise<ComponentStatus[]> {
    return [...(await this.processes.list(owner)), ...(await this.pods.list(owner))];
  }

  async resume(): Promise<ComponentStatus[]> {
    return [...(await this.processes.resume()), ...(await this.pods.resume())];
  }

  async shutdown(): Promise<void> {
    await this.processes.shutdown();
    await this.pods.shutdown();
  }

  async logTail(owner: string, name: ComponentName, lines?: number): Promise<string> {
    return (await this.holder(owner, name)).logTail(owner, name, lines);
  }
}
