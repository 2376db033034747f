"""rayipy: Ray-style distributed computing, Jupyter-first.

    import rayipy
    rayipy.init()

    @rayipy.remote
    def f(x):
        return x * x

    rayipy.get([f.remote(i) for i in range(4)])   # [0, 1, 4, 9]
"""

from rayipy import exceptions
from rayipy.api import (available_resources, cancel, cluster_resources, cluster_status, get,
                        get_dashboard_url, get_gpu_ids, get_runtime_context, init,
                        is_initialized, memory_summary, method, nodes, put, remote,
                        shutdown, wait)
from rayipy.actor import ActorClass, ActorHandle, get_actor, kill
from rayipy.core.object_ref import ObjectRef
from rayipy.generator import DynamicObjectRefGenerator, ObjectRefGenerator
from rayipy.progress_bars import progress
from rayipy.remote_function import RemoteFunction
from rayipy.util.state import timeline
# The Jupyter layer (it imports no IPython until %load_ext): loading it registers its
# progress widget, so rayipy.progress shows one in any notebook kernel; and
# ``%load_ext rayipy`` finds the extension's entry points here.
from rayipy.jupyter import load_ipython_extension, unload_ipython_extension

__version__ = "0.1.0"

__all__ = ["ActorClass", "ActorHandle", "get_actor", "kill", "ObjectRef", "ObjectRefGenerator", "DynamicObjectRefGenerator", "RemoteFunction", "available_resources", "cancel", "cluster_resources",
           "cluster_status", "exceptions", "get", "get_dashboard_url", "get_gpu_ids",
           "get_runtime_context", "init", "is_initialized", "memory_summary", "method", "nodes", "progress",
           "put", "remote", "shutdown", "wait", "__version__"]
