"""MKA1 billing: monthly close of sandbox usage into invoices, statements and chargeback."""
