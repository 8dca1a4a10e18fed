"""`istpan serve`: the model behind HTTP (parses and calls istpan.serve; docs/serving.md)."""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]

EXAMPLES = """examples:
  istpan serve --checkpoint runs/demo/istpan_tiny                 # http://127.0.0.1:8000/ (page, API, /metrics)
  curl -F video=@clip.mp4 'http://127.0.0.1:8000/v1/predict?top_k=3'
  istpan serve --checkpoint best.pt --host 0.0.0.0 --token-file token.txt --media-root /srv/videos
  istpan serve --checkpoint best.pt --max-batch 16 --max-wait-ms 20 --decode-workers 4
"""


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "serve", help="serve a checkpoint over HTTP (uploads, live streams, web page, metrics)",
        description="Serve a checkpoint over HTTP: POST /v1/predict (video upload), /v1/streams (live sources, "
        "Server-Sent Events), a web page at /, /healthz, /readyz and Prometheus /metrics. Needs the serve extra: "
        "pip install 'istpan[serve]'.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a .pt file, a run folder (best.pt, else last.pt) or a model "
                   "folder")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback; any other needs "
                   "--token-file)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0: any free port). The URL is "
                   "printed on stdout once the model is loaded: 'istpan serve: http://HOST:PORT/'")
    p.add_argument("--token-file", help="file holding the bearer token clients must send (Authorization: Bearer)")
    p.add_argument("--max-upload-mb", type=float, default=100.0, help="largest upload, enforced while reading")
    p.add_argument("--max-batch", type=int, default=8, help="clips per forward pass (1: no batching)")
    p.add_argument("--max-wait-ms", type=float, default=10.0, help="how long a clip waits for others to batch with")
    p.add_argument("--max-queue", type=int, default=32, help="predictions in progress at once; more get 503")
    p.add_argument("--max-streams", type=int, default=4, help="stream sessions at once; more get 503")
    p.add_argument("--media-root", help="folder whose files may be stream sources (none: files are refused)")
    p.add_argument("--decode-workers", type=int, default=2, help="decoding processes")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--read-timeout", type=float, default=30.0, help="seconds a client may send nothing mid-upload")
    p.add_argument("--stream-timeout", type=float, default=10.0, help="seconds a stream source may stay silent")
    p.add_argument("--artifact-ttl", type=float, default=600.0, help="seconds explain outputs are kept")
    p.add_argument("--drain-timeout", type=float, default=30.0, help="SIGTERM: seconds in-flight requests may take")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from istpan.errors import UserError

    try:
        from istpan.serve import ServeConfig, serve
    except ImportError as err:
        raise UserError(f"istpan serve needs the serve extra: pip install 'istpan[serve]' ({err})") from None
    config = ServeConfig(
        checkpoint=args.checkpoint, host=args.host, port=args.port, token_file=args.token_file,
        max_upload_mb=args.max_upload_mb, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue, max_streams=args.max_streams, media_root=args.media_root,
        decode_workers=args.decode_workers, device=args.device, read_timeout_s=args.read_timeout,
        stream_timeout_s=args.stream_timeout, artifact_ttl_s=args.artifact_ttl, drain_timeout_s=args.drain_timeout)
    return serve(config, log_level=args.log_level)
