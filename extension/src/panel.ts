/**
 * The "rayipy" sidebar: the active notebook's cluster, as its kernel sees it.
 *
 * The panel keeps one StatusChannel, to the active notebook's kernel, and only while it is
 * visible; it follows notebook switches, kernel changes and restarts.
 */

import { NotebookPanel } from '@jupyterlab/notebook';
import { Kernel } from '@jupyterlab/services';
import { Message } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

import { ChannelState, StatusChannel } from './channel';
import {
  IActionAnswer,
  IClusterStatus,
  IFunctionProgress,
  IWorkerRow,
  proxiedDashboard,
  formatAmount,
  TaskScope,
  formatBytes,
  formatMemoryInUse,
  formatNodeResources,
  formatUsage,
  scopeLabel
} from './status';

/** Kernel states in which it can answer (others: wait for the next change). */
const ANSWERING: ReadonlySet<Kernel.Status> = new Set(['idle', 'busy']);

/** A dashboard pane inside Lab: the task stream or the worker table. */
export type PaneView = 'stream' | 'workers';

export class ClusterPanel extends Widget {
  /**
   * `baseUrl`: Jupyter's (the dashboard is reached through its server proxy);
   * `openPane(view, url)`: opens a dashboard pane in Lab's main area.
   */
  constructor(
    private readonly baseUrl: string = '/',
    private readonly openPane: (view: PaneView, url: string) => void = () => undefined
  ) {
    super();
    this.id = 'rayipy-cluster-panel';
    this.addClass('jp-RayipyPanel');
    this.title.caption = 'rayipy cluster';
    this._header = document.createElement('div');
    this._header.className = 'jp-RayipyPanel-header';
    this._controls = this._makeControls();
    this._body = document.createElement('div');
    this._body.className = 'jp-RayipyPanel-body';
    this.node.append(this._header, this._controls, this._body);
    this._render();
  }

  /** The buttons, built once (so what is typed in the fields survives each update). */
  private _makeControls(): HTMLElement {
    const box = el('div', 'jp-RayipyPanel-controls');
    box.dataset.rayipy = 'controls';
    const idle = el('div', 'jp-RayipyPanel-controlGroup');
    idle.dataset.rayipy = 'controls-disconnected';
    const cpus = el('input', 'jp-RayipyPanel-input jp-RayipyPanel-cpus');
    cpus.type = 'number';
    cpus.min = '1';
    cpus.placeholder = 'CPUs';
    cpus.title = 'worker processes (empty: one per CPU)';
    cpus.dataset.rayipy = 'num-cpus';
    const start = button('Start a local cluster', 'start', () => {
      const value = cpus.value.trim();
      this._act({ action: 'start', num_cpus: value ? Number(value) : null });
    });
    const address = el('input', 'jp-RayipyPanel-input');
    address.placeholder = 'head address, e.g. 10.0.0.5:6379';
    address.dataset.rayipy = 'address-input';
    const password = el('input', 'jp-RayipyPanel-input');
    password.type = 'password';
    password.placeholder = 'password';
    password.dataset.rayipy = 'password-input';
    const connect = button('Connect', 'connect', () =>
      this._act({ action: 'connect', address: address.value, password: password.value || null })
    );
    idle.append(row(start, cpus), row(address), row(password, connect));

    const live = el('div', 'jp-RayipyPanel-controlGroup');
    live.dataset.rayipy = 'controls-connected';
    const stop = button('Stop', 'stop', () => {
      // A stop refused because tasks run: the next click goes ahead (the answer said so).
      this._act({ action: 'stop', force: this._stopRefused });
    });
    const open = button('Dashboard', 'open-dashboard', () => {
      const url = this._dashboard();
      if (url) {
        window.open(url, '_blank', 'noopener');
      }
    });
    const stream = button('Task stream', 'pane-stream', () => this._pane('stream'));
    const workers = button('Workers', 'pane-workers', () => this._pane('workers'));
    live.append(row(stop, open), row(stream, workers));

    const answer = el('div', 'jp-RayipyPanel-message');
    answer.dataset.rayipy = 'action-message';
    box.append(idle, live, answer);
    this._answer = answer;
    this._stopButton = stop;
    return box;
  }

  private _act(action: { [key: string]: unknown }): void {
    if (!this._channel || !this._channel.send(action)) {
      this._showAnswer('The kernel is not listening yet: try again in a moment.', false);
      return;
    }
    this._showAnswer(`${action.action}…`, true);
  }

  private _onAction(answer: IActionAnswer): void {
    this._stopRefused = answer.action === 'stop' && !answer.ok;
    this._stopButton.textContent = this._stopRefused ? 'Stop anyway' : 'Stop';
    this._showAnswer(answer.message, answer.ok);
  }

  private _showAnswer(text: string, ok: boolean): void {
    this._answer.textContent = text;
    this._answer.dataset.ok = String(ok);
  }

  /** The dashboard through Jupyter's server proxy, or null when there is none. */
  private _dashboard(view?: PaneView): string | null {
    const state = this._state;
    if (!state || state.kind !== 'status' || !state.status.dashboard_url) {
      return null;
    }
    return proxiedDashboard(this.baseUrl, state.status.dashboard_url, view);
  }

  private _pane(view: PaneView): void {
    const url = this._dashboard(view);
    if (url) {
      this.openPane(view, url);
    } else {
      this._showAnswer('This cluster has no dashboard.', false);
    }
  }

  /** The notebook whose kernel the panel shows (the tracker's current one). */
  setNotebook(notebook: NotebookPanel | null): void {
    if (notebook === this._notebook) {
      return;
    }
    if (this._notebook) {
      const old = this._notebook.sessionContext;
      old.kernelChanged.disconnect(this._sync, this);
      old.statusChanged.disconnect(this._sync, this);
      this._notebook.disposed.disconnect(this._onNotebookDisposed, this);
    }
    this._notebook = notebook;
    this._state = null;
    if (notebook) {
      notebook.sessionContext.kernelChanged.connect(this._sync, this);
      notebook.sessionContext.statusChanged.connect(this._sync, this);
      notebook.disposed.connect(this._onNotebookDisposed, this);
    }
    this._sync();
  }

  dispose(): void {
    this._closeChannel();
    super.dispose();
  }

  protected onAfterShow(msg: Message): void {
    this._sync();
    this._channel?.refresh();
  }

  protected onAfterHide(msg: Message): void {
    this._sync(); // a hidden panel keeps no channel: the kernel stops looking
  }

  private _onNotebookDisposed(): void {
    this.setNotebook(null);
  }

  /** Open, keep or close the channel to match what is visible and which kernel runs. */
  private _sync(): void {
    const kernel = this._notebook?.sessionContext.session?.kernel ?? null;
    const wanted = this.isVisible && kernel !== null && ANSWERING.has(kernel.status);
    if (this._channel && (!wanted || this._channel.kernel !== kernel)) {
      this._closeChannel();
      this._state = null;
    }
    if (wanted && !this._channel && kernel) {
      this._channel = new StatusChannel(
        kernel,
        state => {
          this._state = state;
          this._render();
        },
        2.0,
        answer => this._onAction(answer)
      );
    }
    this._render();
  }

  private _closeChannel(): void {
    this._channel?.dispose();
    this._channel = null;
  }

  private _render(): void {
    const notebook = this._notebook;
    const context = notebook?.sessionContext;
    this._header.replaceChildren(
      el('div', 'jp-RayipyPanel-title', 'rayipy'),
      el(
        'div',
        'jp-RayipyPanel-subtitle',
        notebook
          ? `${notebook.title.label} · ${context?.kernelDisplayName ?? ''}`
          : 'No notebook'
      )
    );
    let content: HTMLElement[];
    const kernel = context?.session?.kernel ?? null;
    if (!notebook) {
      content = [message('Open a notebook to see its rayipy cluster.')];
    } else if (!kernel) {
      content = [message('This notebook has no kernel.')];
    } else if (!ANSWERING.has(kernel.status)) {
      content = [message(`The kernel is ${kernel.status}…`)];
    } else if (!this._state || this._state.kind === 'waiting') {
      content = [message(this._state?.message ?? 'Connecting to the kernel…')];
    } else if (this._state.kind === 'unavailable') {
      content = [message(this._state.message, 'unavailable')];
    } else {
      content = renderStatus(this._state.status);
    }
    this._body.replaceChildren(...content);
    const shown = this._state?.kind === 'status' ? this._state.status : null;
    this._controls.dataset.connected = shown ? String(shown.connected) : 'unknown';
  }

  private readonly _header: HTMLElement;
  private readonly _controls: HTMLElement;
  private _answer!: HTMLElement;
  private _stopButton!: HTMLButtonElement;
  private _stopRefused = false;
  private readonly _body: HTMLElement;
  private _notebook: NotebookPanel | null = null;
  private _channel: StatusChannel | null = null;
  private _state: ChannelState | null = null;
}

/** The panel body for one status. Elements carry data-rayipy names for tests and themes. */
export function renderStatus(status: IClusterStatus): HTMLElement[] {
  const state = el('div', 'jp-RayipyPanel-state');
  state.dataset.rayipy = 'state';
  if (!status.connected) {
    state.dataset.connected = 'false';
    state.append(el('span', 'jp-RayipyPanel-dot'), 'Not connected');
    return [state, message(status.reason, 'reason')];
  }
  state.dataset.connected = 'true';
  state.append(
    el('span', 'jp-RayipyPanel-dot'),
    `Connected to ${status.started_locally ? 'a local cluster' : 'a cluster'}`
  );
  const out: HTMLElement[] = [state];
  const where = el('div', 'jp-RayipyPanel-address', status.address ?? '');
  where.dataset.rayipy = 'address';
  where.title = `cluster ${status.cluster_id ?? ''}`;
  out.push(where);
  if (status.dashboard_url) {
    const link = el('a', 'jp-RayipyPanel-dashboard', 'Open the dashboard');
    link.href = status.dashboard_url;
    link.target = '_blank';
    link.rel = 'noopener noreferrer';
    link.dataset.rayipy = 'dashboard';
    out.push(link);
  }

  out.push(el('h3', 'jp-RayipyPanel-section', 'Resources in use'));
  const resources = el('table', 'jp-RayipyPanel-table');
  for (const [name, usage] of Object.entries(status.resources ?? {})) {
    const row = resources.insertRow();
    row.dataset.rayipy = `resource-${name}`;
    // What tasks reserved with memory=..., not what they use (see the nodes' memory).
    row.insertCell().textContent = name === 'memory' ? 'memory reserved' : name;
    if (usage.total === 0) {
      row.insertCell().textContent = 'none'; // a GPU row says there is none
      continue;
    }
    row.insertCell().textContent = formatUsage(name, usage);
    const bar = el('div', 'jp-RayipyPanel-bar');
    const fill = el('div', 'jp-RayipyPanel-barFill');
    fill.style.width = `${usage.total > 0 ? Math.round((100 * usage.used) / usage.total) : 0}%`;
    bar.append(fill);
    row.insertCell().append(bar);
  }
  out.push(resources);

  const tasks = status.tasks;
  if (tasks) {
    out.push(el('h3', 'jp-RayipyPanel-section', 'Tasks'));
    // Two scopes side by side: each tile says which it is about, in words, not only in
    // a tooltip (queued and running are the whole cluster's; the rest this notebook's).
    const scopes = status.scopes ?? {};
    const tiles: [string, number][] = [
      ['queued', tasks.queued],
      ['running', tasks.running],
      ['done', tasks.done],
      ['failed', tasks.failed],
      ['cancelled', tasks.cancelled ?? 0]
    ];
    for (const scope of ['cluster', 'notebook'] as TaskScope[]) {
      const group = el('div', 'jp-RayipyPanel-counts');
      group.dataset.rayipy = `tasks-${scope}`;
      const mine = tiles.filter(([name]) => (scopes[name] ?? defaultScope(name)) === scope);
      if (mine.length === 0) {
        continue;
      }
      group.append(el('div', 'jp-RayipyPanel-scope', scopeLabel(scope)));
      for (const [name, value] of mine) {
        group.append(count(name, value, scope));
      }
      out.push(group);
    }
    if (tasks.pending > 0) {
      out.push(
        message(`${tasks.pending} of this notebook's tasks not finished yet`, 'pending')
      );
    }
  }

  const nodes = status.nodes ?? [];
  const alive = nodes.filter(node => node.alive).length;
  const heading = el('h3', 'jp-RayipyPanel-section', `Nodes (${alive})`);
  heading.dataset.rayipy = 'nodes-heading';
  out.push(heading);
  const table = el('table', 'jp-RayipyPanel-table jp-RayipyPanel-nodes');
  const head = table.createTHead().insertRow();
  for (const title of ['host', 'resources', 'memory in use']) {
    head.append(el('th', '', title));
  }
  const body = table.createTBody();
  for (const node of nodes) {
    const row = body.insertRow();
    row.dataset.rayipy = 'node';
    row.dataset.alive = String(node.alive);
    row.title = `node ${node.node_id} at ${node.address}${node.alive ? '' : ' (dead)'}`;
    row.insertCell().textContent = node.host || node.address;
    row.insertCell().textContent = formatNodeResources(node.resources);
    // Real use (the memory resource is a reservation, shown under Resources as such).
    const memory = row.insertCell();
    memory.dataset.rayipy = 'node-memory';
    memory.textContent = formatMemoryInUse(node);
    const rss = Object.entries(node.workers_rss ?? {});
    memory.title = rss.length
      ? `workers' resident memory (RSS): ${rss.map(([pid, bytes]) => `pid ${pid} ${formatBytes(bytes)}`).join(', ')}`
      : "the machine's memory in use";
  }
  out.push(table);
  if (status.workers !== undefined) {
    out.push(message(`${formatAmount(status.workers)} worker processes`, 'workers'));
  }
  if (status.worker_rows && status.worker_rows.length) {
    out.push(workerTable(status.worker_rows));
  }
  const functions = Object.entries(status.functions ?? {});
  if (functions.length) {
    out.push(el('h3', 'jp-RayipyPanel-section', 'Progress by function (cluster)'));
    for (const [name, progress] of functions) {
      out.push(functionBar(name, progress));
    }
  }
  return out;
}

/** One row per worker: pid, state, the task it runs now, resident memory. */
function workerTable(rows: IWorkerRow[]): HTMLElement {
  const table = el('table', 'jp-RayipyPanel-table jp-RayipyPanel-workers');
  table.dataset.rayipy = 'worker-table';
  const head = table.createTHead().insertRow();
  for (const title of ['worker', 'state', 'task', 'RSS']) {
    head.append(el('th', '', title));
  }
  const body = table.createTBody();
  for (const worker of rows) {
    const line = body.insertRow();
    line.dataset.rayipy = 'worker-row';
    line.dataset.state = worker.state;
    line.title = `node ${worker.node_id.slice(0, 8)} ${worker.ip}`;
    line.insertCell().textContent = `pid ${worker.pid}`;
    line.insertCell().textContent = worker.state.toLowerCase();
    const task = line.insertCell();
    task.dataset.rayipy = 'worker-task';
    task.textContent = worker.task || '–';
    const rss = line.insertCell();
    rss.dataset.rayipy = 'worker-rss';
    rss.textContent = worker.rss ? formatBytes(worker.rss) : '';
  }
  return table;
}

/** A function's tasks as one bar: done (green), failed (red), running, waiting. */
function functionBar(name: string, p: IFunctionProgress): HTMLElement {
  const box = el('div', 'jp-RayipyPanel-function');
  box.dataset.rayipy = 'function';
  box.dataset.name = name;
  const label = el('div', 'jp-RayipyPanel-functionLabel');
  label.append(
    el('span', 'jp-RayipyPanel-functionName', name),
    el('span', 'jp-RayipyPanel-functionCounts',
       `${p.done + p.failed} / ${p.total}` + (p.failed ? ` · ${p.failed} failed` : '') +
       (p.running ? ` · ${p.running} running` : ''))
  );
  const bar = el('div', 'jp-RayipyPanel-bar jp-RayipyPanel-stack');
  for (const [part, value] of [['done', p.done], ['failed', p.failed], ['running', p.running]] as [string, number][]) {
    const fill = el('div', `jp-RayipyPanel-part jp-RayipyPanel-part-${part}`);
    fill.style.width = `${p.total ? (100 * value) / p.total : 0}%`;
    bar.append(fill);
  }
  box.append(label, bar);
  return box;
}

function button(text: string, name: string, onClick: () => void): HTMLButtonElement {
  const node = el('button', 'jp-Button jp-mod-styled jp-mod-accept jp-RayipyPanel-button', text);
  node.dataset.rayipy = name;
  node.addEventListener('click', onClick);
  return node;
}

function row(...children: HTMLElement[]): HTMLElement {
  const node = el('div', 'jp-RayipyPanel-row');
  node.append(...children);
  return node;
}

function defaultScope(name: string): TaskScope {
  return name === 'queued' || name === 'running' ? 'cluster' : 'notebook';
}

function count(name: string, value: number, scope: TaskScope): HTMLElement {
  const box = el('div', 'jp-RayipyPanel-count');
  box.dataset.rayipy = `tasks-${name}`;
  box.dataset.scope = scope;
  box.title =
    scope === 'cluster'
      ? `${name}: on the whole cluster, now (with this notebook's tasks on leased workers)`
      : `${name}: this notebook's tasks, since rayipy started`;
  box.append(
    el('div', 'jp-RayipyPanel-countValue', String(value)),
    el('div', '', name),
    el('div', 'jp-RayipyPanel-countScope', scope === 'cluster' ? 'cluster' : 'notebook')
  );
  return box;
}

function message(text: string, name = 'message'): HTMLElement {
  const node = el('div', 'jp-RayipyPanel-message', text);
  node.dataset.rayipy = name;
  return node;
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  if (className) {
    node.className = className;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}
