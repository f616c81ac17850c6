#!/usr/bin/env python3
"""Decoder-contract driver around an ffmpeg decoder (stdlib only, so it runs on any board with python3).

ffmpeg has no per-frame wall-clock output, so this driver reads the decoder's Y4M stream frame by frame from
a pipe and timestamps each frame as it is delivered (time.monotonic_ns). With a pipe smaller than one frame
the decoder is back-pressured, so in steady state the delivery interval is the decode time per frame plus the
Y4M copy; frame 0 also carries process start-up, which is what the suite's warm-up frames exclude.

Usage: ffdecode.py --ffmpeg PATH --decoder NAME INPUT OUTPUT.y4m STATS.jsonl
Exit status: ffmpeg's (0 on success); 3 for a malformed stream from ffmpeg.
"""

import argparse
import json
import re
import subprocess
import sys
import time

PLANES = {"420": 1.5, "420jpeg": 1.5, "420mpeg2": 1.5, "420paldv": 1.5, "422": 2.0, "444": 3.0, "mono": 1.0}


def frame_bytes(header: bytes) -> int:
    width = height = 0
    chroma, depth = "420", 1
    for token in header.split()[1:]:
        key, value = token[:1], token[1:].decode()
        if key == b"W":
            width = int(value)
        elif key == b"H":
            height = int(value)
        elif key == b"C":
            match = re.fullmatch(r"(420jpeg|420mpeg2|420paldv|420|422|444|mono)(?:p(\d+))?", value)
            if match is None:
                raise ValueError(f"unsupported Y4M colour space C{value}")
            chroma = match.group(1)
            depth = 2 if match.group(2) and int(match.group(2)) > 8 else 1
    if chroma not in PLANES or not width or not height:
        raise ValueError(f"unsupported Y4M header {header!r}")
    return int(width * height * PLANES[chroma]) * depth


def read_exact(stream, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ffmpeg", required=True)
    parser.add_argument("--decoder", required=True)
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("stats")
    args = parser.parse_args()
    argv = [args.ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-c:v", args.decoder,
            "-i", args.input, "-f", "yuv4mpegpipe", "-strict", "-1", "pipe:1"]
    start = time.monotonic_ns()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, bufsize=0)
    assert proc.stdout is not None
    with open(args.output, "wb") as out, open(args.stats, "w") as stats:
        header = proc.stdout.readline()
        if not header.startswith(b"YUV4MPEG2 "):
            proc.kill()
            proc.wait()
            print(f"ffdecode: no Y4M header from ffmpeg (got {header[:40]!r})", file=sys.stderr)
            return proc.returncode or 3
        size = frame_bytes(header)
        out.write(header)
        last, index = start, 0
        while True:
            marker = proc.stdout.readline()
            if not marker:
                break
            data = read_exact(proc.stdout, size)
            if not marker.startswith(b"FRAME") or len(data) != size:
                proc.kill()
                proc.wait()
                print(f"ffdecode: truncated frame {index}", file=sys.stderr)
                return 3
            now = time.monotonic_ns()
            out.write(marker)
            out.write(data)
            stats.write(json.dumps({"frame": index, "decode_ns": now - last}) + "\n")
            last, index = now, index + 1
    return proc.wait()


if __name__ == "__main__":
    sys.exit(main())
