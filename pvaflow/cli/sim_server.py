"""``pvapy-ad-sim-server``: a simulated area detector publishing NTNDArray frames.

The flags are those of pvapy's ``pvapy-ad-sim-server`` with the same short
and long names and meanings, with these differences:

* ``-rp/--report-period`` is in seconds (pvapy counts frames): a plain-text
  rate line is printed every period, none when <= 0;
* ``-dc/--disable-curses`` is accepted and does nothing (no curses here);
* ``--summary-file PATH`` writes a JSON summary when publishing ends;
* ``--codec lz4|blosc|bslz4`` publishes compressed frames, as areaDetector's
  NDPluginCodec writes them;
* ``--lartpc MODE`` publishes synthetic LArTPC wire-plane events (with
  ``--lartpc-seed``), see :mod:`pvaflow.sim.lartpc`;
* ``-mpv/--metadata-pv`` values are not random: PV k (from 0) carries
  ``uniqueId * 1000 + k`` with the frame's exact time stamp (CA PVs too),
  see :mod:`pvaflow.sim.metadata_pvs`;
* ``-npv/--notify-pv`` takes ``ca://`` (or bare) and ``pva://`` names, puts
  just before the first frame (not at start-up), and a failed put ends the
  run with exit 1; ``--notify-timeout`` bounds it;
* ``-if``/``-id`` also read TIFF (tifffile) and the detector formats of
  fabio; ``-cfg`` describes raw binary files (see
  :mod:`pvaflow.sim.raw_binary`); ``-hcm`` streams HDF5 chunks as stored
  and refuses filters our codecs do not read (see
  :mod:`pvaflow.sim.hdf5_chunks`).

``-nf/--n-frames`` keeps pvapy's meaning: the number of *distinct* frames
to generate (random mode) or to take from the input files. When it is <= 0
the server uses all input frames, or generates ``--cache-size`` random
frames. When there are more distinct frames than the cache holds, every
frame is published once and the server stops after the last one; otherwise
the cached frames are republished in a cycle until the runtime ends.

Exit codes: 0 after a normal end, Ctrl-C or SIGTERM; 1 on a runtime
failure; 2 on bad input (one ``pvapy-ad-sim-server: error: ...`` line).
"""

import logging
import signal
import sys

from pvaflow.cli.common import (EXIT_FAILURE, EXIT_OK, add_access_security_options,
                                add_logging_options, new_parser, positive, print_error, run_tool,
                                runtime_failures_reported, setup_logging)
from pvaflow.hpc.errors import ConfigurationError
from pvaflow.sim.frames import DATATYPES, COLOR_MODES, FrameSet, RandomFrames

PROG = "pvapy-ad-sim-server"

log = logging.getLogger("pvaflow.cli.sim_server")


def _integer(text):
    """argparse type: any integer (pvapy lets -nf be <= 0)."""
    return int(text)


def build_parser():
    """The argument parser of the simulator."""
    parser = new_parser(PROG, "Simulated area detector: publishes NTNDArray frames"
                              " (random images or frames from files) at a paced rate.")
    add = parser.add_argument
    add("-cn", "--channel-name", dest="channel_name", default="pvapy:image",
        help="PVA channel to serve (default: pvapy:image).")
    add("-if", "--input-file", dest="input_file", default=None,
        help="Input file to stream: .npy, .npz, HDF5 (.h5/.hdf5/.hdf/.nxs, with -hds), TIFF,"
             " a detector format fabio reads (.cbf, .edf, .ge*, .mccd, .sfrm, ...) or raw"
             " binary (with -cfg); without -if/-id random frames are generated.")
    add("-id", "--input-directory", dest="input_directory", default=None,
        help="Directory whose image files (the types of -if; .raw/.bin/.dat with -cfg) are"
             " streamed in name order, then -if if given.")
    add("-mm", "--mmap-mode", dest="mmap_mode", action="store_true",
        help="Memory-map .npy (and uncompressed TIFF) input files instead of reading them.")
    add("-hds", "--hdf-dataset", dest="hdf_dataset", default=None,
        help="Dataset to stream from HDF5 input files (needed for HDF5 input).")
    add("-hcm", "--hdf-compression-mode", dest="hdf_compression_mode", action="store_true",
        help="Stream the HDF5 dataset's compressed chunks as stored (blosc, lz4 or"
             " bitshuffle/LZ4 filters) as compressed NTNDArrays, without decompressing.")
    add("-cfg", "--config-file", dest="config_file", default=None,
        help="YAML layout of raw binary input files: width, height, datatype, and optionally"
             " header_offset, between_frames, n_images, endian (under file_info: or top level).")
    add("-fps", "--frame-rate", dest="frame_rate", type=positive(float), default=20.0,
        help="Frames per second (default: 20); 0 publishes as fast as possible.")
    add("-nx", "--n-x-pixels", dest="n_x_pixels", type=positive(int, allow_zero=False),
        default=256, help="Pixels in x of random frames (default: 256).")
    add("-ny", "--n-y-pixels", dest="n_y_pixels", type=positive(int, allow_zero=False),
        default=256, help="Pixels in y of random frames (default: 256).")
    add("-cm", "--color-mode", dest="color_mode", type=int, default=0,
        choices=sorted(COLOR_MODES),
        help="Colour mode of random frames: 0 mono [NX, NY] (default), 2 RGB1 [3, NX, NY],"
             " 3 RGB2 [NX, 3, NY], 4 RGB3 [NX, NY, 3].")
    add("-dt", "--datatype", dest="datatype", default="uint8", choices=DATATYPES,
        help="Data type of random frames (default: uint8).")
    add("-mn", "--minimum", dest="minimum", type=float, default=None,
        help="Smallest random value (default: the smallest of the data type).")
    add("-mx", "--maximum", dest="maximum", type=float, default=None,
        help="Largest random value (default: the largest of the data type).")
    add("-nf", "--n-frames", dest="n_frames", type=_integer, default=0,
        help="Distinct frames to generate or to take from the inputs (<= 0: all input"
             " frames, or --cache-size random frames). More than --cache-size: each is"
             " published once and the server stops; otherwise they are republished in a cycle.")
    add("-cs", "--cache-size", dest="cache_size", type=positive(int, allow_zero=False),
        default=1000, help="Frames held ready to publish (default: 1000).")
    add("-rt", "--runtime", dest="runtime", type=positive(float, allow_zero=False),
        default=300.0, help="Publishing time in seconds, after the start delay (default: 300).")
    add("-std", "--start-delay", dest="start_delay", type=positive(float), default=10.0,
        help="Seconds between creating the channel and the first frame (default: 10).")
    add("-shd", "--shutdown-delay", dest="shutdown_delay", type=positive(float), default=10.0,
        help="Seconds the channel stays up after the last frame (default: 10);"
             " a second Ctrl-C ends it.")
    add("-rp", "--report-period", dest="report_period", type=float, default=1.0,
        help="Seconds between rate reports (default: 1); <= 0 prints only the summary.")
    add("-mpv", "--metadata-pv", dest="metadata_pv", default=None,
        help="Metadata PVs updated once per frame with the frame's time stamp:"
             " 'pva://name,ca://name,name' (bare names are CA, served by an in-process IOC);"
             " PV k (from 0) carries uniqueId * 1000 + k.")
    add("-npv", "--notify-pv", dest="notify_pv", default=None,
        help="PV to put -nvl into just before the first frame (areaDetector's acquire"
             " trigger, e.g. 13PVA1:cam1:Acquire): ca://name or bare (CA), pva://name.")
    add("-nvl", "--notify-pv-value", dest="notify_pv_value", default="1",
        help="Value for -npv, converted to the PV's type; enum choices by name"
             " (e.g. Acquire) or index (default: 1).")
    add("--notify-timeout", dest="notify_timeout", type=positive(float, allow_zero=False),
        default=5.0, help="Seconds to wait for -npv to connect and take the value (default: 5).")
    add("--codec", dest="codec", default=None, choices=("lz4", "blosc", "bslz4"),
        help="Publish the frames compressed with this codec, as areaDetector's"
             " NDPluginCodec does (needs the imagecodecs package).")
    add("--lartpc", dest="lartpc", default=None, metavar="MODE",
        choices=("events", "events+truth", "planes", "planes+truth"),
        help="Publish synthetic LArTPC events (3 wire planes of -ny x -nx, float32,"
             " see pvaflow.sim.lartpc) instead of random frames: 'events' one [3, NY, NX]"
             " frame per event, 'planes' one [NY, NX] frame per plane (Plane attribute);"
             " '+truth' adds the labels as a second row section (Sections=image,labels).")
    add("--lartpc-seed", dest="lartpc_seed", type=int, default=0,
        help="Seed of the LArTPC events (default: 0); the same seed gives the same events.")
    add("--summary-file", dest="summary_file", default=None, metavar="PATH",
        help="Write a JSON summary (published, first_id, last_id, elapsed_s, rate, ...)"
             " to PATH when publishing ends.")
    add_access_security_options(parser)
    add_logging_options(parser)
    return parser


def make_frame_set(args):
    """The frames to stream, from the parsed options (ConfigurationError on bad input)."""
    files = args.input_file or args.input_directory
    if args.lartpc and files:
        raise ConfigurationError("--lartpc generates its own events; drop -if/-id to use it")
    if not files:
        for flag, given in (("-hcm", args.hdf_compression_mode), ("-cfg", args.config_file)):
            if given:
                raise ConfigurationError(f"{flag} applies to input files; add -if FILE or -id DIR")
        for flag, given in (("-hds", args.hdf_dataset), ("-mm", args.mmap_mode)):
            if given:
                log.warning("%s applies to input files only; ignored with random frames", flag)
    if files:
        from pvaflow.sim.file_inputs import InputOptions, open_inputs  # pylint: disable=import-outside-toplevel
        if args.hdf_compression_mode and args.codec:
            raise ConfigurationError("-hcm publishes the chunks as they are compressed in the"
                                     " file; drop --codec or -hcm")
        if args.color_mode:
            log.warning("-cm/--color-mode does not apply to file input; frames are mono")
        layout = None
        if args.config_file:
            from pvaflow.sim.raw_binary import load_layout  # pylint: disable=import-outside-toplevel
            layout = load_layout(args.config_file)
        options = InputOptions(args.mmap_mode, args.hdf_dataset, args.hdf_compression_mode,
                               layout)
        sources = open_inputs(args.input_file, args.input_directory, options)
        try:
            return FrameSet(sources, limit=args.n_frames)
        except BaseException:
            for source in sources:
                source.close()
            raise
    count = args.n_frames if args.n_frames > 0 else args.cache_size
    if args.lartpc:
        from pvaflow.sim.lartpc import LArTPCFrames  # pylint: disable=import-outside-toplevel
        return FrameSet([LArTPCFrames(count, args.n_y_pixels, args.n_x_pixels, args.lartpc,
                                      args.lartpc_seed)])
    source = RandomFrames(count, args.n_x_pixels, args.n_y_pixels, args.datatype,
                          args.color_mode, args.minimum, args.maximum)
    return FrameSet([source])


def _install_signal_handlers(server):
    """SIGINT/SIGTERM stop publishing (a second one ends the shutdown delay)."""
    previous = {}

    def handler(signum, frame):  # pylint: disable=unused-argument
        server.request_stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        previous[signum] = signal.signal(signum, handler)
    return previous


def _body(args):
    # Imported here so that --help, --version and flag errors stay fast.
    from pvaflow.sim.server import SimConfig, SimServer  # pylint: disable=import-outside-toplevel

    setup_logging(args.log_level, args.log_file)
    config = SimConfig(channel=args.channel_name, frame_rate=args.frame_rate,
                       runtime=args.runtime, start_delay=args.start_delay,
                       shutdown_delay=args.shutdown_delay, report_period=args.report_period,
                       codec=args.codec,
                       cache_size=args.cache_size, summary_file=args.summary_file,
                       metadata_pvs=args.metadata_pv)
    if args.access_security_file:
        from pvaflow.hpc.access import AccessPolicy  # pylint: disable=import-outside-toplevel
        group = args.access_security_readonly_group  # the image record is read-only
        config.access_policy = AccessPolicy(args.access_security_file, group, group,
                                            args.access_security_macros)
    if args.notify_pv:
        from pvaflow.sim.notify import StartNotifier  # pylint: disable=import-outside-toplevel
        config.notifier = StartNotifier(args.notify_pv, args.notify_pv_value, args.notify_timeout)
    if not config.channel:
        raise ConfigurationError("the channel name is empty; give one with -cn/--channel-name")
    from pvaflow.hpc.naming import validate_channel  # pylint: disable=import-outside-toplevel
    validate_channel(config.channel, "channel (-cn)")
    frame_set = make_frame_set(args)
    try:
        server = SimServer(frame_set, config)
    except BaseException:
        frame_set.close()
        raise
    previous = _install_signal_handlers(server)
    try:
        server.prepare()
        summary = server.run()
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
    if summary.get("error"):
        print_error(PROG, f"publishing failed: {summary['error']}")
        return EXIT_FAILURE
    return EXIT_OK


def main(argv=None):
    """Run the simulator; return the exit code."""
    return run_tool(PROG, build_parser(), argv, runtime_failures_reported(PROG, _body))


if __name__ == "__main__":
    sys.exit(main())
