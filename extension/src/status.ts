/**
 * What the kernel sends (rayipy/jupyter/lab.py `status()`), and how the sidebar words it.
 * Pure functions only: no DOM, no kernel.
 */

/** The status layout this sidebar reads; the kernel sends its own as `version`. */
export const STATUS_VERSION = 1;

export interface IResourceUsage {
  total: number;
  used: number;
}

export interface INodeStatus {
  node_id: string;
  host: string;
  address: string;
  alive: boolean;
  /** Resources; `memory` is what tasks may reserve (memory=...), not what they use. */
  resources: { [name: string]: number };
  /** The machine's memory in use and in all, as its node agent last said (0: not yet). */
  memory_used?: number;
  memory_total?: number;
  /** Each worker's resident memory (RSS), by pid. */
  workers_rss?: { [pid: string]: number };
}

export interface ITaskCounts {
  /** Waiting in the head's queues (the whole cluster). */
  queued: number;
  /** Running on workers (the whole cluster). */
  running: number;
  /** This kernel's tasks not finished yet. */
  pending: number;
  /** This kernel's tasks that finished without error. */
  done: number;
  /** This kernel's tasks that raised or lost their worker. */
  failed: number;
  /** This kernel's tasks that were cancelled. */
  cancelled?: number;
}

/** One worker process (the sidebar's worker rows). */
export interface IWorkerRow {
  pid: number;
  node_id: string;
  ip: string;
  /** IDLE, RUNNING, BLOCKED, ACTOR, LEASED... as the head says. */
  state: string;
  /** The name of the task it runs now ('' when none). */
  task: string;
  /** Resident memory in bytes (0 before its node's first figures). */
  rss: number;
}

/** One function's tasks on the cluster, by state. */
export interface IFunctionProgress {
  done: number;
  failed: number;
  running: number;
  waiting: number;
  total: number;
}

/** The kernel's answer to a button (lab.py `run_action`). */
export interface IActionAnswer {
  type: 'action';
  action: string;
  ok: boolean;
  message: string;
}

/** Whose tasks a count is about: the whole cluster's, or this notebook's. */
export type TaskScope = 'cluster' | 'notebook';

export interface IClusterStatus {
  version: number;
  rayipy_version: string;
  connected: boolean;
  /** Why it is not connected (empty when connected). */
  reason: string;
  address?: string;
  cluster_id?: string;
  started_locally?: boolean;
  dashboard_url?: string;
  nodes?: INodeStatus[];
  resources?: { [name: string]: IResourceUsage };
  tasks?: ITaskCounts;
  /** Each task count's scope (sent by the kernel; written on its tile). */
  scopes?: { [count: string]: TaskScope };
  workers?: number;
  worker_rows?: IWorkerRow[];
  functions?: { [name: string]: IFunctionProgress };
}

/** The port of a dashboard URL ("http://127.0.0.1:8265" -> "8265"), or null. */
export function dashboardPort(url: string): string | null {
  const match = /:(\d+)\/?$/.exec(url.trim());
  return match ? match[1] : null;
}

/** The dashboard through Jupyter's server proxy (works where only Jupyter is reachable). */
export function proxiedDashboard(baseUrl: string, url: string, view?: string): string | null {
  const port = dashboardPort(url);
  if (port === null) {
    return null;
  }
  const base = baseUrl.endsWith('/') ? baseUrl : baseUrl + '/';
  return `${base}rayipy-dashboard/${port}/` + (view ? `?view=${view}` : '');
}

/** The label that says a count's scope. */
export function scopeLabel(scope: TaskScope): string {
  return scope === 'cluster' ? 'whole cluster' : 'this notebook';
}

/** A node's memory in use, "3.1 GiB / 23.5 GiB", or '' before its first figures. */
export function formatMemoryInUse(node: INodeStatus): string {
  if (!node.memory_total) {
    return '';
  }
  return `${formatBytes(node.memory_used ?? 0)} / ${formatBytes(node.memory_total)}`;
}

/** A status object that the sidebar can show, or an error message saying why not. */
export function checkStatus(value: unknown): IClusterStatus | string {
  if (typeof value !== 'object' || value === null) {
    return `the kernel sent no status (got ${JSON.stringify(value)})`;
  }
  const status = value as IClusterStatus;
  if (status.version !== STATUS_VERSION) {
    return (
      `the kernel's rayipy (${status.rayipy_version ?? 'unknown version'}) sends status ` +
      `version ${status.version}, this sidebar reads version ${STATUS_VERSION}: ` +
      'install the same rayipy in the kernel and in JupyterLab'
    );
  }
  return status;
}

/** "2", "0.5", "1.25": resource amounts without float noise. */
export function formatAmount(value: number): string {
  if (Number.isInteger(value)) {
    return String(value);
  }
  return String(Math.round(value * 100) / 100);
}

/** Bytes as "23.5 GiB". */
export function formatBytes(value: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let amount = value;
  let unit = 0;
  while (amount >= 1024 && unit < units.length - 1) {
    amount /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? amount : amount.toFixed(1)} ${units[unit]}`;
}

/** One resource as "used / total", memory in bytes. */
export function formatUsage(name: string, usage: IResourceUsage): string {
  const format = name === 'memory' ? formatBytes : formatAmount;
  return `${format(usage.used)} / ${format(usage.total)}`;
}

/** A node's resources as "2 CPU, 1 GPU" (memory left to its own column). */
export function formatNodeResources(resources: { [name: string]: number }): string {
  const names = Object.keys(resources).filter(name => name !== 'memory');
  names.sort((a, b) => order(a) - order(b) || a.localeCompare(b));
  return names.map(name => `${formatAmount(resources[name])} ${name}`).join(', ');
}

function order(name: string): number {
  return name === 'CPU' ? 0 : name === 'GPU' ? 1 : 2;
}
