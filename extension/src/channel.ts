/**
 * The sidebar's line to one kernel: one silent execute_request asks rayipy in the kernel to
 * open a comm (rayipy/jupyter/lab.py `open_status_channel`), then the kernel pushes status
 * over it whenever something changes. Closing the channel closes the comm, which stops the
 * kernel's thread.
 */

import { Kernel, KernelMessage } from '@jupyterlab/services';
import { UUID } from '@lumino/coreutils';

import { IActionAnswer, IClusterStatus, checkStatus } from './status';

export const COMM_TARGET = 'rayipy.status';

/** This page's open channels, by the client id their comm will carry. */
const liveChannels = new Map<string, StatusChannel>();

/**
 * Channels of this page that were closed before their comm arrived (the kernel was busy,
 * restarting, or the panel was hidden meanwhile): their comms are closed when they open.
 * Comms of other browser tabs on the same kernel are left alone.
 */
const retiredClients = new Set<string>();

/** Kernel connections on which the comm target is registered (once, for good). */
const dispatching = new WeakSet<Kernel.IKernelConnection>();

/** What the panel shows for a kernel. */
export type ChannelState =
  | { kind: 'waiting'; message: string }
  | { kind: 'unavailable'; message: string }
  | { kind: 'status'; status: IClusterStatus };

export class StatusChannel {
  /**
   * Start asking `kernel`; `onState` is called with every new state, until `dispose()`.
   * `interval` is how often (seconds) the kernel looks for changes.
   */
  constructor(
    readonly kernel: Kernel.IKernelConnection,
    private readonly onState: (state: ChannelState) => void,
    private readonly interval = 2.0,
    private readonly onAction: (answer: IActionAnswer) => void = () => undefined
  ) {
    this._client = UUID.uuid4();
    liveChannels.set(this._client, this);
    if (!dispatching.has(kernel)) {
      // Registered for the connection's lifetime, so a comm that arrives after its channel
      // closed still finds a handler (which closes it) instead of an error.
      kernel.registerCommTarget(COMM_TARGET, StatusChannel._dispatch);
      dispatching.add(kernel);
    }
    void this._open();
  }

  get isDisposed(): boolean {
    return this._disposed;
  }

  /** Ask the kernel for a snapshot now (when the panel is shown again). */
  refresh(): void {
    if (this._comm && !this._comm.isDisposed) {
      this._comm.send({ action: 'refresh' });
    }
  }

  /** Run one of the sidebar's buttons in the kernel (start, connect, stop); false when
   * there is no comm yet to send it on. The answer comes to `onAction`. */
  send(action: { [key: string]: unknown }): boolean {
    if (!this._comm || this._comm.isDisposed) {
      return false;
    }
    this._comm.send(action as any);
    return true;
  }

  dispose(): void {
    if (this._disposed) {
      return;
    }
    this._disposed = true;
    if (this._retry !== null) {
      clearTimeout(this._retry);
    }
    liveChannels.delete(this._client);
    const comm = this._comm;
    this._comm = null;
    if (!comm) {
      retiredClients.add(this._client); // its comm may still come: close it then
    }
    if (comm && !comm.isDisposed && !this.kernel.isDisposed) {
      try {
        comm.close(); // the kernel's thread stops when this arrives
      } catch (error) {
        console.debug('rayipy: closing the status comm failed', error);
      }
    }
  }

  private async _open(): Promise<void> {
    this._emit({ kind: 'waiting', message: 'Connecting to the kernel…' });
    let info: KernelMessage.IInfoReply;
    try {
      info = await this.kernel.info;
    } catch (error) {
      this._emit({ kind: 'waiting', message: `The kernel did not answer: ${error}` });
      return;
    }
    const language = info.language_info?.name ?? '';
    if (language.toLowerCase() !== 'python') {
      this._emit({
        kind: 'unavailable',
        message: `This notebook's kernel runs ${language || 'an unknown language'}, not Python: rayipy runs in Python kernels.`
      });
      return;
    }
    if (this.kernel.status === 'busy') {
      this._emit({
        kind: 'waiting',
        message: 'Waiting for the running cell to finish before connecting…'
      });
    }
    const expression =
      "__import__('rayipy.jupyter.lab', fromlist=['open_status_channel'])" +
      `.open_status_channel(${JSON.stringify(this._client)}, ${this.interval})`;
    let reply: KernelMessage.IExecuteReplyMsg;
    try {
      reply = await this.kernel.requestExecute({
        code: '',
        silent: true,
        store_history: false,
        allow_stdin: false,
        stop_on_error: false,
        user_expressions: { rayipy: expression }
      }).done;
    } catch (error) {
      if (!this._disposed) {
        this._emit({ kind: 'waiting', message: `The kernel did not answer: ${error}` });
      }
      return;
    }
    if (this._disposed) {
      return;
    }
    const content = reply.content as KernelMessage.IExecuteReply;
    if (content.status !== 'ok') {
      // Aborted behind a cell that failed: try again when the kernel is free.
      this._emit({ kind: 'waiting', message: 'The kernel skipped the request; retrying…' });
      this._retry = setTimeout(() => this._reopen(), 2000);
      return;
    }
    const result = (content.user_expressions ?? {})['rayipy'] as any;
    if (!result || result.status !== 'ok') {
      const why = result ? `${result.ename}: ${result.evalue}` : 'no answer';
      const missing = result?.ename === 'ModuleNotFoundError';
      this._emit({
        kind: 'unavailable',
        message: missing
          ? `rayipy is not installed in this kernel's Python (${why}).`
          : `rayipy in this kernel could not report its status (${why}).`
      });
      return;
    }
    this._show((result.data?.['application/json'] ?? {})['status']);
  }

  private _reopen(): void {
    if (!this._disposed && !this.kernel.isDisposed) {
      void this._open();
    }
  }

  /** Every "rayipy.status" comm the kernel opens: to its channel, closed, or left alone. */
  private static _dispatch(comm: Kernel.IComm, msg: KernelMessage.ICommOpenMsg): void {
    const client = String((msg.content.data as any)?.client ?? '');
    const channel = liveChannels.get(client);
    if (channel) {
      channel._attach(comm, msg);
    } else if (retiredClients.delete(client)) {
      comm.close(); // opened for a channel of this page that is gone
    } // else another browser tab's channel on the same kernel
  }

  private _attach(comm: Kernel.IComm, msg: KernelMessage.ICommOpenMsg): void {
    const data = msg.content.data as any;
    this._comm = comm;
    comm.onMsg = (update: KernelMessage.ICommMsgMsg) => {
      const body = update.content.data as any;
      if (body && body.type === 'status') {
        this._show(body.status);
      } else if (body && body.type === 'action' && !this._disposed) {
        this.onAction(body as IActionAnswer);
      }
    };
    comm.onClose = () => {
      if (this._comm === comm && !this._disposed) {
        // The kernel closed it (too many sidebars on it, or it restarted): open another.
        this._comm = null;
        this._emit({ kind: 'waiting', message: 'Reconnecting to the kernel…' });
        this._retry = setTimeout(() => this._reopen(), 1000);
      }
    };
    this._show(data.status);
  }

  private _show(value: unknown): void {
    const status = checkStatus(value);
    if (typeof status === 'string') {
      this._emit({ kind: 'unavailable', message: status });
    } else {
      this._emit({ kind: 'status', status });
    }
  }

  private _emit(state: ChannelState): void {
    if (!this._disposed) {
      this.onState(state);
    }
  }

  private readonly _client: string;
  private _comm: Kernel.IComm | null = null;
  private _disposed = false;
  private _retry: ReturnType<typeof setTimeout> | null = null;
}
