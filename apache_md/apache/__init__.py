"""The Apache side: reading httpd's configuration, writing the includes, activation.

The config syntax reader, the MD directives, the generated includes, apache2ctl,
and activation (verify, move live, reload, roll back). Never imports the ca wing.
"""
