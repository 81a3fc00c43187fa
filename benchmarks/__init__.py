"""Benchmarks: loopback load runs writing JSON and Markdown; scripts, not tests nor package code."""
