"""poseless.render"""
