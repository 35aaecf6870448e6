"""pvapy-hpc-consumer: receive, process and publish a stream of PV updates."""

import dataclasses
import os
import re
import signal

from pvaflow.hpc.consumer import Consumer
from pvaflow.hpc.fleet import Fleet, RestartPolicy
from pvaflow.hpc.id_list import parse_id_list
from pvaflow.hpc.loader import parse_json_object
from pvaflow.hpc.consumer_config import ConsumerConfig
from pvaflow.hpc.errors import ConfigurationError

from . import common, stage_options

PROG = "pvapy-hpc-consumer"


def build_parser():
    p = common.new_parser(PROG, "Receive PV updates from an input channel, hand each to a "
                                "processor and publish results, status and control channels.")
    nonneg_int, nonneg = common.positive(int), common.positive(float)
    p.add_argument("-id", "--consumer-id", dest="consumer_id", type=nonneg_int, default=1,
                   help="Consumer id, used in channel names for '*' and '_' (default: 1).")
    p.add_argument("-nc", "--n-consumers", dest="n_consumers", type=common.positive(int, allow_zero=False),
                   default=1, help="Number of consumers, one process each, ids from --consumer-id on.")
    p.add_argument("-cid", "--consumer-id-list", dest="consumer_id_list", default=None,
                   help="Consumer ids, e.g. '1,3,5', '1-4,7' or 'range(1,5)' (overrides -id/-nc).")
    p.add_argument("--restart-limit", dest="restart_limit", type=nonneg_int, default=5,
                   help="Restarts of a dead consumer process before it is given up (default: 5).")
    p.add_argument("--restart-backoff", dest="restart_backoff", type=nonneg, default=1.0,
                   help="Seconds before the first restart, doubled each time (default: 1).")
    p.add_argument("--cuda-devices", dest="cuda_devices", default=None,
                   help="GPUs for the consumer processes, e.g. '0,1,2,3': each process sees one "
                        "(CUDA_VISIBLE_DEVICES), assigned in turn.")
    p.add_argument("--unresponsive-timeout", dest="unresponsive_timeout", type=nonneg, default=30.0,
                   help="Kill and restart a consumer process that sent no status for this many "
                        "seconds (frozen); 0: never (default: 30).")
    p.add_argument("-ic", "--input-channel", dest="input_channel", required=True,
                   help="Input channel; '*' becomes the consumer id.")
    p.add_argument("-im", "--input-mode", dest="input_mode", default="pva",
                   help="pva (monitor a remote channel, default), ca, pvas (serve the input record; "
                        "upstream clients put objects) or rpc (serve an RPC service; each request "
                        "is one object and its reply says whether it was accepted).")
    p.add_argument("-ia", "--input-args", dest="input_args", default=None,
                   help="JSON object of input-mode settings (none are defined for these modes).")
    p.add_argument("-om", "--output-mode", dest="output_mode", default="pvas",
                   help="pvas (serve the output record, default), pva (put each object into a "
                        "remote record), rpc (send each object as an RPC request) or scatter (rpc to "
                        "whichever of several receivers has room; -oc with '*', targets in -oa).")
    p.add_argument("-oa", "--output-args", dest="output_args", default=None,
                   help="JSON object of output-mode settings: pva {\"timeout\": s}; rpc "
                        "{\"timeout\": s, \"retry\": s, \"retryDelay\": s} (retry: keep resending "
                        "refused objects for up to this many seconds); scatter {\"targets\": \"1-3\", "
                        "\"timeout\": s, \"retry\": s}.")
    stage_options.add_channel_options(p, "consumer")
    p.add_argument("-rqs", "--receiver-queue-size", dest="receiver_queue_size", type=int, default=-1,
                   help="Receiver queue size: <0 process in the receiving thread (default), "
                        "0 unbounded queue, N bounded (a full queue rejects and counts).")
    p.add_argument("-ao", "--accumulate-objects", dest="accumulate_objects", type=int, default=-1,
                   help="With a receiver queue: process when this many objects are queued ...")
    p.add_argument("-at", "--accumulation-timeout", dest="accumulation_timeout", type=nonneg, default=1.0,
                   help="... or when the oldest has waited this many seconds (default: 1).")
    p.add_argument("-dpn", "--distributor-plugin-name", dest="distributor_plugin", default="pydistributor",
                   help="Distributor plugin name (default: pydistributor).")
    p.add_argument("-dg", "--distributor-group", dest="distributor_group", default=None,
                   help="Distributor group of this consumer.")
    p.add_argument("-ds", "--distributor-set", dest="distributor_set", default=None,
                   help="Distributor set of this consumer.")
    p.add_argument("-dt", "--distributor-trigger", dest="distributor_trigger", default=None,
                   help="Field the distributor uses to tell updates apart (e.g. uniqueId).")
    p.add_argument("-du", "--distributor-updates", dest="distributor_updates",
                   type=common.positive(int, allow_zero=False), default=None,
                   help="Consecutive updates each consumer (or set) receives in turn.")
    p.add_argument("-nds", "--n-distributor-sets", dest="n_distributor_sets",
                   type=common.positive(int, allow_zero=False), default=1,
                   help="Number of distributor sets (for the id offset).")
    stage_options.add_processing_options(p)
    return p


def config_from_args(args):
    return ConsumerConfig(
        **stage_options.common_config_kwargs(args), input_mode=args.input_mode,
        input_args=parse_json_object(args.input_args, "--input-args"), output_mode=args.output_mode,
        output_args=parse_json_object(args.output_args, "--output-args"),
        accumulate_objects=args.accumulate_objects, accumulation_timeout=args.accumulation_timeout,
        consumer_id=args.consumer_id, distributor_plugin=args.distributor_plugin,
        distributor_group=args.distributor_group, distributor_set=args.distributor_set,
        distributor_trigger=args.distributor_trigger, distributor_updates=args.distributor_updates,
        n_distributor_sets=args.n_distributor_sets,
    )


def parse_devices(text):
    """'0,1' or '0-3' -> device ids; GPU/MIG UUIDs are passed on as they are."""
    if text is None:
        return None
    devices = []
    for part in (p.strip() for p in text.split(",")):
        if re.fullmatch(r"\d+-\d+", part):
            first, last = (int(x) for x in part.split("-"))
            if last < first:
                raise ConfigurationError(f"--cuda-devices: range '{part}' runs backwards")
            devices += [str(i) for i in range(first, last + 1)]
        elif re.fullmatch(r"\d+|(GPU|MIG)-[0-9A-Za-z/-]+", part):
            devices.append(part)
        else:
            raise ConfigurationError(
                f"--cuda-devices '{text}': '{part}' is not a device id, range or GPU/MIG UUID; e.g. '0,1' or '0-3'")
    return devices


def consumer_ids(args):
    if args.consumer_id_list:
        return parse_id_list(args.consumer_id_list)
    return list(range(args.consumer_id, args.consumer_id + args.n_consumers))


def _run(args):
    common.setup_logging(args.log_level, args.log_file)
    config = config_from_args(args)
    ids = consumer_ids(args)
    if len(ids) > 1:
        configs = [dataclasses.replace(config, consumer_id=i, n_consumers=len(ids)) for i in ids]
        for c in configs:
            c.__post_init__()  # channel names per id
        fleet = Fleet(configs, RestartPolicy(args.restart_limit, args.restart_backoff,
                                              unresponsive=args.unresponsive_timeout),
                      args.report_period, args.stats_file, args.log_level, args.log_file,
                      cuda_devices=parse_devices(args.cuda_devices))
        signal.signal(signal.SIGINT, fleet.request_stop)
        signal.signal(signal.SIGTERM, fleet.request_stop)
        return fleet.run()
    devices = parse_devices(args.cuda_devices)
    if devices:
        os.environ["CUDA_VISIBLE_DEVICES"] = devices[0]  # before the processor loads CUDA
    config = dataclasses.replace(config, consumer_id=ids[0])
    consumer = Consumer(config)
    signal.signal(signal.SIGINT, consumer.request_stop)
    signal.signal(signal.SIGTERM, consumer.request_stop)
    common.exit_now(consumer.run())


def main(argv=None):
    return common.run_tool(PROG, build_parser(), argv, _run)


if __name__ == "__main__":
    raise SystemExit(main())
