"""Reference (b): the same grid written by Python XlsxWriter in constant_memory mode, with a
format on each cell as the library's own benchmarks do."""
import datetime
import sys

import xlsxwriter

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from data import COLUMNS, row  # noqa: E402


def main(n, path):
    wb = xlsxwriter.Workbook(path, {"constant_memory": True})
    ws = wb.add_worksheet("Bench")
    bold = wb.add_format({"bold": True})
    formats = {
        3: wb.add_format({"num_format": "yyyy-mm-dd"}),
        4: wb.add_format({"num_format": "#,##0"}),
        5: wb.add_format({"num_format": '"$"#,##0.00;-"$"#,##0.00'}),
        6: wb.add_format({"num_format": "#,##0.00"}),
        7: wb.add_format({"num_format": '"€"#,##0.00;-"€"#,##0.00'}),
        9: wb.add_format({"num_format": "0%"}),
    }
    for c, col in enumerate(COLUMNS):
        ws.write_string(0, c, col["header"], bold)
    for i in range(n):
        r = i + 1
        v = row(i)
        ws.write_string(r, 0, v[0])
        ws.write_string(r, 1, v[1])
        ws.write_string(r, 2, v[2])
        ws.write_datetime(r, 3, datetime.datetime.fromisoformat(v[3]), formats[3])
        ws.write_number(r, 4, v[4], formats[4])
        ws.write_number(r, 5, v[5], formats[5])
        ws.write_number(r, 6, v[6], formats[6])
        ws.write_number(r, 7, v[7], formats[7])
        ws.write_boolean(r, 8, v[8])
        ws.write_number(r, 9, v[9], formats[9])
        ws.write_string(r, 10, v[10])
        ws.write_string(r, 11, v[11])
    ws.freeze_panes(1, 0)
    ws.autofilter(0, 0, n, len(COLUMNS) - 1)
    wb.close()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
