"""efflab.theory"""
