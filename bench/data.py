"""The benchmark grid: N rows x 12 mixed columns, computed from the row number so that the
NDJSON file, the bare rust_xlsxwriter program (examples/bench_bare.rs) and the Python
XlsxWriter program all write exactly the same values.

Columns: 3 text, a date, 4 numbers (integer, currency, decimal, currency), a boolean,
a percentage, 2 repetitive text codes.
"""
import datetime
import json
import sys

STATUS = ["NEW", "OPEN", "CLOSED", "HOLD"]
CURRENCY = ["EUR", "USD", "GBP", "ZAR", "JPY"]
EPOCH = datetime.date(2020, 1, 1)

COLUMNS = [
    {"key": "customer", "header": "Customer", "type": "text"},
    {"key": "description", "header": "Description", "type": "text"},
    {"key": "reference", "header": "Reference", "type": "text"},
    {"key": "date", "header": "Date", "type": "date"},
    {"key": "qty", "header": "Qty", "type": "integer"},
    {"key": "price", "header": "Price", "type": "currency", "currency": "USD", "decimals": 2},
    {"key": "amount", "header": "Amount", "type": "decimal", "decimals": 2},
    {"key": "cost", "header": "Cost", "type": "currency", "currency": "EUR", "decimals": 2},
    {"key": "shipped", "header": "Shipped", "type": "boolean"},
    {"key": "discount", "header": "Discount", "type": "percent"},
    {"key": "status", "header": "Status", "type": "text"},
    {"key": "currency", "header": "Currency", "type": "text"},
]


def row(i):
    return [
        f"Customer {i % 9973}",
        f"Line item description {i}",
        f"REF-{i:08d}",
        (EPOCH + datetime.timedelta(days=i % 2000)).isoformat(),
        i % 1000,
        (i % 10000) / 100,
        (i * 37 % 10000000) / 100,
        (i % 777) * 1.25,
        i % 3 == 0,
        (i % 100) / 100,
        STATUS[i % 4],
        CURRENCY[i % 5],
    ]


def write_ndjson(n, path):
    with open(path, "w") as f:
        f.write(json.dumps({"name": "Bench", "title": "Benchmark", "columns": COLUMNS}) + "\n")
        for i in range(n):
            f.write(json.dumps(row(i), separators=(",", ":")) + "\n")


if __name__ == "__main__":
    write_ndjson(int(sys.argv[1]), sys.argv[2])
