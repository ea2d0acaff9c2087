"""efflab.train"""
