"""A bare `pyarrow.flight` server that streams Parquet files as they are: the transfer floor a
Flight answer over loopback cannot beat on this machine (scripts/bench_union.py's baseline).

    python scripts/flight_floor.py COLUMNS FILE...

COLUMNS is a comma-separated list of the columns to stream. Serves on 127.0.0.1 (an OS-chosen
port, printed as the first line of standard output); every `do_get` streams the files' columns
through pyarrow.dataset, batches as the Parquet reader makes them."""

import sys

import pyarrow.dataset as ds
import pyarrow.flight as flight


class FlightFloor(flight.FlightServerBase):
    def __init__(self, columns, files):
        super().__init__("grpc://127.0.0.1:0")
        self.columns = columns
        self.files = files

    def do_get(self, context, ticket):
        dataset = ds.dataset(self.files, format="parquet")
        return flight.RecordBatchStream(dataset.scanner(columns=self.columns).to_reader())


def main():
    columns, files = sys.argv[1].split(","), [f.removeprefix("file://") for f in sys.argv[2:]]
    server = FlightFloor(columns, files)
    print(server.port, flush=True)
    server.serve()


if __name__ == "__main__":
    main()
