"""pvapy-hpc-collector: merge producer channels and process objects in id order."""

import signal

from pvaflow.hpc.collector import Collector, CollectorConfig
from pvaflow.hpc.id_list import parse_id_list

from . import common, stage_options

PROG = "pvapy-hpc-collector"


def build_parser():
    p = common.new_parser(PROG, "Merge the output channels of several producers, hand the objects "
                                "to a processor strictly in object-id order and publish results.")
    nonneg_int = common.positive(int)
    p.add_argument("-id", "--collector-id", dest="collector_id", type=nonneg_int, default=1,
                   help="Collector id, used in channel names for '*' and '_' (default: 1).")
    p.add_argument("-pid", "--producer-id-list", dest="producer_id_list", default="1,2",
                   help="Producer ids: '1,2', '1-4' or 'range(1,5)' (default: 1,2).")
    p.add_argument("-ic", "--input-channel", dest="input_channel", required=True,
                   help="Producer channel pattern; '*' becomes each producer id "
                        "(e.g. pvapy:consumer:*:output).")
    p.add_argument("-im", "--input-mode", dest="input_mode", default="pva", choices=("pva", "ca"),
                   help="Input protocol: pva (default) or ca.")
    stage_options.add_channel_options(p, "collector")
    p.add_argument("-rqs", "--receiver-queue-size", dest="receiver_queue_size", type=int, default=-1,
                   help="Bound of the queue of released objects waiting for the processor "
                        "(<= 0: unbounded; a full queue rejects and counts).")
    p.add_argument("-ccs", "--collector-cache-size", dest="collector_cache_size", type=int, default=-1,
                   help="Objects held while waiting for a missing id (<= 0: 1000). When full, the "
                        "missing id is given up and counted as missed.")
    p.add_argument("--collector-timeout", dest="collector_timeout",
                   type=common.positive(float, allow_zero=False), default=1.0,
                   help="Seconds to wait for a missing id before giving it up (default: 1).")
    p.add_argument("--objects-per-id", dest="objects_per_id", type=common.positive(int, allow_zero=False),
                   default=1, help="Objects sharing one id (e.g. image tiles), released together "
                                   "(default: 1).")
    stage_options.add_processing_options(p, default_oid_offset=1)
    return p


def config_from_args(args):
    return CollectorConfig(
        **stage_options.common_config_kwargs(args), input_mode=args.input_mode,
        consumer_id=args.collector_id, producer_ids=tuple(parse_id_list(args.producer_id_list)),
        cache_size=args.collector_cache_size if args.collector_cache_size > 0 else 1000,
        collector_timeout=args.collector_timeout, objects_per_id=args.objects_per_id,
    )


def _run(args):
    common.setup_logging(args.log_level, args.log_file)
    collector = Collector(config_from_args(args))
    signal.signal(signal.SIGINT, collector.request_stop)
    signal.signal(signal.SIGTERM, collector.request_stop)
    common.exit_now(collector.run())


def main(argv=None):
    return common.run_tool(PROG, build_parser(), argv, _run)


if __name__ == "__main__":
    raise SystemExit(main())
