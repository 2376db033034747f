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
  IClusterStatus,
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

export class ClusterPanel extends Widget {
  constructor() {
    super();
    this.id = 'rayipy-cluster-panel';
    this.addClass('jp-RayipyPanel');
    this.title.caption = 'rayipy cluster';
    this._header = document.createElement('div');
    this._header.className = 'jp-RayipyPanel-header';
    this._body = document.createElement('div');
    this._body.className = 'jp-RayipyPanel-body';
    this.node.append(this._header, this._body);
    this._render();
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
      this._channel = new StatusChannel(kernel, state => {
        this._state = state;
        this._render();
      });
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
  }

  private readonly _header: HTMLElement;
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
  return out;
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
