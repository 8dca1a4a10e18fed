"""Ray Serve deployment of the same `istpan serve` app, for a cluster (docs/serving.md, "Ray Serve").

Not part of the istpan package and never imported by it: Ray is not a dependency (and cannot be installed on the
machine this project is developed on, so this file is untested here). Each Ray replica runs the app exactly as
`istpan serve` does (model, decode processes, micro-batcher, stream sessions); Ray's HTTP proxy spreads requests.

    pip install 'istpan[serve]' 'ray[serve]'
    export ISTPAN_CHECKPOINT=runs/demo/istpan_tiny          # every node needs the checkpoint at this path
    export ISTPAN_REPLICAS=4 ISTPAN_TOKEN_FILE=/etc/istpan/token   # optional
    serve run deploy.ray_serve:app --host 0.0.0.0 --port 8000  # from the repository root
"""

from __future__ import annotations

import os

from ray import serve

from istpan.serve import ServeConfig, create_app

config = ServeConfig(
    checkpoint=os.environ.get("ISTPAN_CHECKPOINT", "runs/demo/istpan_tiny"),
    token_file=os.environ.get("ISTPAN_TOKEN_FILE"),  # Ray's proxy binds the port: the token still guards the API
    max_batch=int(os.environ.get("ISTPAN_MAX_BATCH", "8")),
    max_wait_ms=float(os.environ.get("ISTPAN_MAX_WAIT_MS", "10")),
    decode_workers=int(os.environ.get("ISTPAN_DECODE_WORKERS", "2")),
    media_root=os.environ.get("ISTPAN_MEDIA_ROOT"),
    device=os.environ.get("ISTPAN_DEVICE", "cpu"),
)
fastapi_app = create_app(config)  # the lifespan (model load, pools) runs in each replica when Ray starts it


@serve.deployment(
    num_replicas=int(os.environ.get("ISTPAN_REPLICAS", "2")),
    ray_actor_options={"num_cpus": config.decode_workers + 1},  # decode processes + the forward pass
    max_ongoing_requests=config.max_queue,  # Ray queues beyond this per replica; the app's own 503 stays behind it
)
@serve.ingress(fastapi_app)
class IstpanServe:
    """The FastAPI app as a Ray Serve deployment; the routes are the app's."""


app = IstpanServe.bind()
