/**
 * rayipy's JupyterLab extension: a left-sidebar panel showing the active notebook's
 * rayipy cluster (see panel.ts), and a command to open it.
 */

import {
  ILabShell,
  ILayoutRestorer,
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { LabIcon } from '@jupyterlab/ui-components';

import { ClusterPanel, PaneView } from './panel';

const PLUGIN_ID = 'rayipy-labextension:sidebar';
const WIDGET_MANAGER = '@jupyter-widgets/jupyterlab-manager:plugin';
const SHOW_COMMAND = 'rayipy:show-cluster';
const PANE_COMMAND = 'rayipy:open-dashboard-pane';
const PANE_TITLES: { [view: string]: string } = {
  stream: 'rayipy task stream',
  workers: 'rayipy workers'
};

const clusterIcon = new LabIcon({
  name: 'rayipy:cluster',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 16 16">' +
    '<g class="jp-icon3" fill="#616161">' +
    '<circle cx="8" cy="8" r="2.2"/><circle cx="2.5" cy="3" r="1.5"/>' +
    '<circle cx="13.5" cy="3" r="1.5"/><circle cx="2.5" cy="13" r="1.5"/>' +
    '<circle cx="13.5" cy="13" r="1.5"/>' +
    '<path d="M3.3 3.9 7 7.1l-.5.6L2.8 4.5zm9.4 0 .5.6L9.5 7.7 9 7.1zM7 8.9l.5.6-3.7 3.2-.5-.6zm2 0 3.7 3.2-.5.6-3.7-3.2z"/>' +
    '</g></svg>'
});

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: "A sidebar showing the active notebook's rayipy cluster.",
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ILabShell, ILayoutRestorer, ICommandPalette, ISettingRegistry],
  activate: (
    app: JupyterFrontEnd,
    tracker: INotebookTracker,
    labShell: ILabShell | null,
    restorer: ILayoutRestorer | null,
    palette: ICommandPalette | null,
    settings: ISettingRegistry | null
  ) => {
    if (settings) {
      void saveWidgetState(settings);
    }
    // One pane per view, reused: the dashboard page (through Jupyter's server proxy, so
    // it works where only Jupyter's port is reachable) showing that section alone.
    const panes = new Map<string, MainAreaWidget<Widget>>();
    app.commands.addCommand(PANE_COMMAND, {
      label: args => `Open the ${PANE_TITLES[args.view as string] ?? 'rayipy dashboard'}`,
      execute: args => {
        const view = args.view as PaneView;
        const url = args.url as string;
        if (!PANE_TITLES[view] || typeof url !== 'string') {
          throw new Error(`rayipy: a pane is 'stream' or 'workers' with a url, got ${view}`);
        }
        let pane = panes.get(view);
        if (!pane || pane.isDisposed) {
          const content = new Widget();
          content.addClass('jp-RayipyPane');
          const frame = document.createElement('iframe');
          frame.dataset.rayipy = `pane-frame-${view}`;
          content.node.append(frame);
          pane = new MainAreaWidget({ content });
          pane.id = `rayipy-pane-${view}`;
          pane.title.label = PANE_TITLES[view];
          pane.title.icon = clusterIcon;
          pane.title.closable = true;
          panes.set(view, pane);
        }
        const frame = pane.content.node.querySelector('iframe') as HTMLIFrameElement;
        if (frame.getAttribute('src') !== url) {
          frame.src = url;
        }
        if (!pane.isAttached) {
          app.shell.add(pane, 'main', { mode: 'split-right' });
        }
        app.shell.activateById(pane.id);
      }
    });
    const panel = new ClusterPanel(app.serviceManager.serverSettings.baseUrl, (view, url) => {
      void app.commands.execute(PANE_COMMAND, { view, url });
    });
    panel.title.icon = clusterIcon;
    app.shell.add(panel, 'left', { rank: 650 });
    restorer?.add(panel, 'rayipy-cluster');

    panel.setNotebook(tracker.currentWidget);
    tracker.currentChanged.connect((_, notebook) => panel.setNotebook(notebook));

    app.commands.addCommand(SHOW_COMMAND, {
      label: 'Show the rayipy cluster',
      caption: "Open the sidebar with the active notebook's rayipy cluster",
      execute: () => {
        if (labShell) {
          labShell.activateById(panel.id);
        } else {
          app.shell.activateById(panel.id);
        }
      }
    });
    palette?.addItem({ command: SHOW_COMMAND, category: 'rayipy' });
  }
};

/**
 * Save widget state with notebooks unless the user chose otherwise. A cell's task output
 * lives in an output widget (rayipy/jupyter/cell_output.py), and progress bars are
 * widgets: without the widgets' saved state a reopened notebook shows neither
 * (jupyterlab-manager's `saveState` is off by default). A user's own choice, either way,
 * is never changed.
 */
async function saveWidgetState(registry: ISettingRegistry): Promise<void> {
  try {
    const settings = await registry.load(WIDGET_MANAGER);
    if ((settings.user as { saveState?: boolean }).saveState === undefined) {
      await settings.set('saveState', true);
    }
  } catch (error) {
    // ipywidgets' manager is not installed: there are no widgets to save.
    console.debug('rayipy: widget state not turned on', error);
  }
}

export default plugin;
