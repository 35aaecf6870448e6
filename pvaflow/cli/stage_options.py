"""Command-line options shared by the processing stages (consumer, collector)."""

from pvaflow.hpc.consumer_config import STATS_SECTIONS
from pvaflow.hpc.loader import parse_json_object

from . import common


def add_channel_options(p, kind):
    p.add_argument("-oc", "--output-channel", dest="output_channel", default=None,
                   help=f"Output channel served by this {kind}; '_' means pvapy:{kind}:<id>:output, "
                        "'*' becomes the id.")
    p.add_argument("-sc", "--status-channel", dest="status_channel", default=None,
                   help=f"Status channel ('_' means pvapy:{kind}:<id>:status).")
    p.add_argument("-cc", "--control-channel", dest="control_channel", default=None,
                   help=f"Control channel ('_' means pvapy:{kind}:<id>:control); put "
                        "{command, args} with command configure, reset_stats, get_stats or stop.")
    p.add_argument("-ifs", "--id-format-spec", dest="id_format_spec", default=None,
                   help="Python format spec for ids in channel names, e.g. 02d.")


def add_processing_options(p, default_oid_offset=0):
    nonneg_int, nonneg = common.positive(int), common.positive(float)
    p.add_argument("-sqs", "--server-queue-size", dest="server_queue_size", type=nonneg_int, default=0,
                   help="Server-side monitor queue size (record[queueSize=N]); 0: none.")
    p.add_argument("-pf", "--processor-file", dest="processor_file", default=None,
                   help="Python file holding the processor class.")
    p.add_argument("-pc", "--processor-class", dest="processor_class", default=None,
                   help="Processor class name (in --processor-file) or package.module.Class; "
                        "default: pass-through.")
    p.add_argument("-pa", "--processor-args", dest="processor_args", default=None,
                   help="JSON object passed to the processor's constructor.")
    p.add_argument("-of", "--oid-field", dest="oid_field", default="uniqueId",
                   help="Object id field used for accounting (default: uniqueId).")
    p.add_argument("-oo", "--oid-offset", dest="oid_offset", type=int, default=default_oid_offset,
                   help="Id step between consecutive objects (default: computed).")
    p.add_argument("-fr", "--field-request", dest="field_request", default="",
                   help="Fields to request, e.g. 'uniqueId,value,dimension' (id and timeStamp are added).")
    p.add_argument("-siu", "--skip-initial-updates", dest="skip_initial_updates", type=nonneg_int,
                   default=1, help="Updates not processed after each (re)connection (default: 1).")
    p.add_argument("-mc", "--metadata-channels", dest="metadata_channels", default=None,
                   help="Metadata channels 'pva://name,ca://name,name' (bare names are CA), each "
                        "queued for the processor in metadataQueueMap.")
    p.add_argument("--metadata-queue-size", dest="metadata_queue_size",
                   type=common.positive(int, allow_zero=False), default=1000,
                   help="Bound of each metadata queue; a full queue rejects and counts (default: 1000).")
    p.add_argument("-rt", "--runtime", dest="runtime", type=float, default=0,
                   help="Run this many seconds; <= 0: until stopped (default).")
    p.add_argument("-rp", "--report-period", dest="report_period", type=float, default=0,
                   help="Print a report every this many seconds; <= 0: final report only.")
    p.add_argument("-rs", "--report-stats", dest="report_stats", default="all",
                   help="Sections to report: comma list of " + ", ".join(STATS_SECTIONS) + ", all.")
    p.add_argument("--stats-file", dest="stats_file", default=None,
                   help="Append one JSON line of statistics per report to this file.")
    del nonneg
    common.add_access_security_options(p)
    common.add_logging_options(p)


def common_config_kwargs(args):
    """Keyword arguments of ConsumerConfig that every stage takes from its flags."""
    sections = [s.strip() for s in args.report_stats.split(",") if s.strip()]
    if "all" in sections:
        sections = list(STATS_SECTIONS)
    return dict(
        input_channel=args.input_channel, output_channel=args.output_channel,
        status_channel=args.status_channel, control_channel=args.control_channel,
        id_format_spec=args.id_format_spec, processor_file=args.processor_file,
        processor_class=args.processor_class,
        processor_args=parse_json_object(args.processor_args, "--processor-args"),
        oid_field=args.oid_field, oid_offset=args.oid_offset, field_request=args.field_request,
        skip_initial_updates=args.skip_initial_updates, server_queue_size=args.server_queue_size,
        receiver_queue_size=args.receiver_queue_size, runtime=args.runtime,
        report_period=args.report_period, report_stats=tuple(sections), stats_file=args.stats_file,
        metadata_channels=args.metadata_channels, metadata_queue_size=args.metadata_queue_size,
        access_security_file=args.access_security_file,
        access_security_group=args.access_security_group,
        access_security_readonly_group=args.access_security_readonly_group,
        access_security_macros=args.access_security_macros,
    )
