"""Dumps a workbook as openpyxl — an independent reader — sees it, as JSON on stdout.

Usage: python3 openpyxl_dump.py WORKBOOK.xlsx
"""
import datetime
import json
import sys

import openpyxl


def value(v):
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    return v


def main(path):
    wb = openpyxl.load_workbook(path)
    out = {
        "properties": {"title": wb.properties.title, "creator": wb.properties.creator},
        "sheets": {},
    }
    for ws in wb.worksheets:
        out["sheets"][ws.title] = {
            "freeze_panes": ws.freeze_panes,
            "auto_filter": ws.auto_filter.ref,
            # TableList.items() yields (name, ref) pairs.
            "tables": dict(ws.tables.items()),
            "widths": {k: v.width for k, v in ws.column_dimensions.items()},
            "rows": [
                [
                    {
                        "v": value(c.value),
                        "t": c.data_type,
                        "fmt": c.number_format,
                        "bold": bool(c.font.b),
                        "link": c.hyperlink.target if c.hyperlink else None,
                    }
                    for c in row
                ]
                for row in ws.iter_rows()
            ],
        }
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
